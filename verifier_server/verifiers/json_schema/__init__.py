"""The "json_schema" verifier: is the completion's JSON valid under the schema `item.reference`?

The reference is a JSON Schema object, validated per Draft 2020-12 unless its `$schema` names
another draft (an unknown `$schema` also means 2020-12). An invalid schema, an unresolvable or
remote `$ref`, or a `pattern` RE2 cannot compile is an invalid item; the completion's faults are
OK results scored 0.0: "missing_fenced_block"/"missing_answer_tag", "too_large", "too_deep",
"invalid_json", "too_complex", "schema_violation". Nothing a completion holds gives a non-OK
status (a masked item would be "no penalty": a reward hack).

`scoring` "binary": 1.0 if valid, else 0.0. "fraction": the share of requirements met, where the
requirements are (a) each name in the top-level `required` list, met when the instance is an
object holding it with a value valid under the top-level `properties[name]` (if any), and (b) the
whole instance being valid. So a valid instance scores 1.0, an invalid one at most n/(n+1), and
adding optional properties cannot raise the score. Without a top-level `required` it is binary.

Guarantees against hostile completions and schemas (the worker pool also kills items past
`timeout_s`):
- no network: `$ref` resolves only inside the schema and the bundled meta-schemas;
- regexes (`pattern`, `patternProperties`, and `additionalProperties`, which jsonschema matches
  against `patternProperties` with Python's `re`) run on RE2, so `(a+)+$` cannot backtrack;
  every pattern in every subschema (found by keyword, whatever the key order or draft) is
  compiled before the completion is read; a schema combining `unevaluatedProperties` with
  `patternProperties` is rejected, because jsonschema evaluates that pair with Python's `re` in
  code that cannot be swapped out; a lone surrogate in a string (JSON `"\\ud800"`), which RE2's
  UTF-8 cannot hold, is matched as U+FFFD;
- JSON text longer than `max_json_chars`, nested deeper than `max_depth` (checked by a linear
  scan before parsing, so no RecursionError) or with an array longer than `max_items` is
  scored 0.0 without validating; `uniqueItems` hashes elements instead of jsonschema's
  quadratic pairwise comparison;
- a `$ref` cycle through keywords that apply to the same instance (allOf, anyOf, not, if, …)
  would recurse forever whatever the completion: it is an invalid reference, found before
  validating; any other recursion follows the instance's nesting, so running out of stack
  (past a raised limit of 6000 frames) is "too_deep";
- validation is charged one step per keyword evaluation: past `max_validation_steps`, or past
  half of `timeout_s` spent validating (schemas whose `unevaluatedItems` or `$ref`s re-evaluate
  subschemas can take time exponential in the instance's depth), the item is "too_complex";
- NaN/Infinity, number literals beyond a double's range (`1e400`, which would otherwise be
  infinity and satisfy every `minimum`), decimal literals a double cannot hold as written
  (`1.0000000000000001` would be 1.0 and pass `maximum: 1` and `type: integer`; `1e-400`
  would be 0.0), integers over Python's 4300-digit limit and duplicate object keys are invalid
  JSON (plain json.loads accepts NaN/Infinity, makes 1e400 infinite, rounds silently and keeps
  the last duplicate); so every number the keywords see is finite and the one written;
- `multipleOf` is exact on the decimals as written (0.0075 is a multiple of 0.0001), with no
  float division to overflow on a 400-digit integer.
`format` is an annotation unless `check_formats` is set; then date, email, idn-email,
hostname, idn-hostname, ipv4, ipv6, uuid and regex (RE2 syntax) are asserted, per
`formats.py`; other formats pass.

- params.py: JsonSchemaParams
- schema.py: the schema compiled into a hardened validator (RE2 patterns, no retrieval,
  the `$ref` cycle check), cached
- keywords.py: the keywords replaced so that hostile input stays cheap, and the step budget
- walk.py: subschemas by keyword, and in-place `$ref` cycles
- formats.py: the `format` checks
- parse.py: reading the completion's JSON within bounds
- verifier.py: the Verifier (extraction, bounds, validation, scoring)
"""
