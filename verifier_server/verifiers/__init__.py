"""Built-in verifiers, one module each; `base` holds the interface they share."""
