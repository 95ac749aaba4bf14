"""OpenAI grader JSON (`string_check`, `text_similarity`, `python`, `score_model`,
`label_model`, `multi`) run by this server: see `verifier` and the README's reference."""
