"""The `keywords` verifier: the fraction of required keywords that the completion mentions.

An example of a plugin: one class with a name, a parameter model and a scoring method.
Install the package (its entry point registers it) or run
`verifier-server serve --plugin verifier_keywords.keywords`.
"""

from __future__ import annotations

from pydantic import Field

from verifier_server.types import Item, Result
from verifier_server.verifiers.base import InvalidItem, Params, Verifier


class KeywordsParams(Params):
    case_sensitive: bool = Field(default=False, description="Match keywords case-sensitively.")


class KeywordsVerifier(Verifier):
    name = "keywords"
    description = "Fraction of the keywords in `reference` (a list of strings) that appear."
    Params = KeywordsParams
    execution = "bulk"  # a substring scan: linear time, safe to run in the server process

    def score_one(self, item: Item, params: KeywordsParams) -> Result:
        keywords = item.reference
        if (
            not isinstance(keywords, list)
            or not keywords
            or not all(isinstance(k, str) for k in keywords)
        ):
            raise InvalidItem("reference", "must be a non-empty list of strings")
        text = item.completion if params.case_sensitive else item.completion.lower()
        found = [k for k in keywords if (k if params.case_sensitive else k.lower()) in text]
        return Result(
            id=item.id,
            score=len(found) / len(keywords),
            reason="" if len(found) == len(keywords) else "missing_keywords",
            details={"found": found, "missing": [k for k in keywords if k not in found]},
        )
