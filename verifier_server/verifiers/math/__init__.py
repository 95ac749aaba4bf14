"""The "math" verifier: anchored answer extraction, pre-screens, parsing and strict equivalence.

- extract.py: the answer's anchor (last `\\boxed{}` or `<answer>` tag), reasoning excluded
- screen.py: sub-millisecond rejection of hostile input (length, nesting, huge numbers)
- parse.py: plain numbers exactly, everything else through math-verify's LaTeX parser
- units.py: units after an answer, split off and compared as quantities (sympy.physics.units)
- equivalence.py: the comparison rules
- verifier.py: the Verifier (params, gold parsing, memoisation, results)
"""
