# ruff: noqa: E501  (a table of cases reads best one class per line)
"""The math verifier's equivalence table: (gold, completion, expected score), both directions
of every class the issue names. A completion without an anchor is wrapped in `\\boxed{…}`.
Every bug found becomes a row here."""

from __future__ import annotations

import pytest

from verifier_server.types import Item, Status
from verifier_server.verifiers.math.verifier import MathParams, MathVerifier

Y, N = 1.0, 0.0

# fmt: off
TABLE: list[tuple[str, str, float]] = [
    # --- integers
    ("42", "42", Y), ("42", "+42", Y), ("42", "42.0", Y), ("42", "42.00", Y),
    ("42", r"\frac{84}{2}", Y), ("42", r"4.2\times10^{1}", Y), ("42", r"42 \text{ apples}", Y),
    ("42", r"\$42", Y), ("42", "43", N), ("42", "-42", N), ("42", "420", N), ("42", "4.2", N),
    ("42", "42.1", N), ("-3", "-3", Y), ("-3", "- 3", Y), ("-3", "3", N), ("0", "0", Y),
    ("0", "0.0", Y), ("0", "0.0001", N),
    # --- fractions
    (r"\frac{1}{2}", r"\frac{1}{2}", Y), (r"\frac{1}{2}", r"\dfrac12", Y), (r"\frac{1}{2}", "0.5", Y),
    (r"\frac{1}{2}", "1/2", Y), (r"\frac{1}{2}", r"\frac{2}{4}", Y), (r"\frac{1}{2}", r"\tfrac{1}{2}", Y),
    (r"\frac{1}{2}", r"\frac{1}{3}", N), (r"\frac{1}{2}", "0.51", N), (r"\frac{1}{2}", r"\frac{2}{1}", N),
    (r"\frac{1}{2}", r"-\frac12", N), ("-\\frac{3}{4}", "-0.75", Y), ("-\\frac{3}{4}", "0.75", N),
    (r"\frac{7}{3}", r"2\frac{1}{3}", Y), (r"\frac{7}{3}", r"2\frac{1}{4}", N),  # mixed numbers
    # --- decimals (tolerance follows what was written)
    ("0.25", r"\frac14", Y), ("0.25", "0.250", Y), ("0.25", "0.26", N), ("0.25", r"\frac{1}{5}", N),
    (r"\frac{1}{3}", "0.33333", Y), (r"\frac{1}{3}", "0.333", N), (r"\frac{1}{3}", "0.33", N),
    (r"\frac{2}{3}", "0.66667", Y), (r"\frac{2}{3}", "0.66666", Y), (r"\frac{2}{3}", "0.6667", Y),
    (r"\frac{2}{3}", "0.667", N), ("0.67", r"\frac{2}{3}", Y), ("0.67", "0.670", Y), ("0.67", "0.66", N),
    ("0.67", "0.6667", N), ("2.5", "2.50", Y), ("2.5", r"\frac{5}{2}", Y), ("2.5", "2.54", N),
    ("1234568", "1234567.0", N), ("1234568", "1234568.0", Y), ("3.75", "3.75", Y), ("3.75", "3.57", N),
    # --- scientific notation
    ("1500", r"1.5\times10^3", Y), ("1500", r"1.5 \cdot 10^{3}", Y), ("1500", "1.5e3", Y),
    ("1500", r"15\times10^{2}", Y), ("1500", r"1.5\times10^{4}", N), ("1500", "1.5e4", N),
    (r"6.02\times10^{23}", "6.02e23", Y), (r"6.02\times10^{23}", r"6.03\times10^{23}", N),
    (r"\frac{1}{3}", r"3.33333\times10^{-1}", Y), (r"\frac{1}{3}", r"3.3\times10^{-1}", N),
    # --- radicals
    (r"\sqrt{8}", r"2\sqrt{2}", Y), (r"\sqrt{8}", r"2\sqrt2", Y), (r"\sqrt{8}", r"\sqrt{2}\cdot 2", Y),
    (r"\sqrt{8}", r"2^{3/2}", Y), (r"\sqrt{8}", r"\frac{4}{\sqrt{2}}", Y), (r"\sqrt{8}", r"\sqrt{2}", N),
    (r"\sqrt{8}", r"2\sqrt{3}", N), (r"\sqrt{8}", r"3\sqrt{2}", N), (r"\sqrt{8}", "2.83", N),
    (r"\sqrt{8}", "2.8284", Y), (r"\frac{\sqrt{3}}{2}", r"\frac{1}{2}\sqrt{3}", Y),
    (r"\frac{\sqrt{3}}{2}", r"\sqrt{3}/2", Y), (r"\frac{\sqrt{3}}{2}", r"\sin(\pi/3)", Y),
    (r"\frac{\sqrt{3}}{2}", r"\frac{\sqrt{2}}{2}", N), (r"\frac{\sqrt{3}}{2}", r"\frac{\sqrt{3}}{3}", N),
    (r"\sqrt[3]{2}", r"2^{1/3}", Y), (r"\sqrt[3]{2}", r"\sqrt{2}", N),
    (r"\sqrt{2}+\sqrt{3}", r"\sqrt{5+2\sqrt{6}}", Y), (r"\sqrt{2}+\sqrt{3}", r"\sqrt{5}", N),
    # --- pi and e
    (r"2\pi", r"2\pi", Y), (r"2\pi", r"\pi \cdot 2", Y), (r"2\pi", "6.2832", Y), (r"2\pi", "6.28", N),
    (r"2\pi", r"\pi", N), (r"\frac{\pi}{4}", r"\pi/4", Y), (r"\frac{\pi}{4}", r"0.25\pi", Y),
    (r"\frac{\pi}{4}", r"\frac{\pi}{3}", N), ("e^{2}", r"e \cdot e", Y), ("e^{2}", "7.389", Y),
    ("e^{2}", "2e", N), ("e^{2}", "7.4", N), (r"1-\frac{1}{e}", r"\frac{e-1}{e}", Y),
    (r"1-\frac{1}{e}", r"1 - e^{-1}", Y), (r"1-\frac{1}{e}", r"1+\frac{1}{e}", N), (r"1-\frac{1}{e}", "1-e", N),
    (r"\ln 2", r"\ln(2)", Y), (r"\ln 2", r"\ln 3", N), (r"\log_2 8", "3", Y), (r"\log_2 8", "4", N),
    # --- huge and tiny exact values (math-verify compares these as rounded floats)
    ("2^{100}", "1267650600228229401496703205376", Y), ("2^{100}", "1267650600228229401496703205377", N),
    ("2^{100}", r"2^{99}\cdot 2", Y), ("2^{100}", "2^{101}", N), ("2^{100}", "4^{50}", Y),
    ("1267650600228229401496703205376", "2^{100}", Y), ("10^{30}", "1000000000000000000000000000001", N),
    (r"\frac{1}{2^{98}}", r"\frac{1}{2^{99}}", N), (r"\frac{1}{2^{98}}", "2^{-98}", Y),
    (r"\frac{1}{2^{98}}", r"\frac{2}{2^{99}}", Y), ("10^{-10}", "10^{-11}", N), ("10^{-10}", "0.0000000001", Y),
    ("3^{40}", "3^{40}+1", N), ("3^{40}", "12157665459056928801", Y),
    # --- nested braces in the box (math-verify's extraction stops at the first `}`)
    (r"1-\frac{1}{e}", r"\boxed{1+\frac{1}{e}}", N), (r"\frac{1}{\frac{1}{2}+1}", r"\frac{2}{3}", Y),
    ("2", r"\frac{\sqrt{16}}{2}", Y), (r"\frac{1}{2}", r"\boxed{\frac{1}{2}}+1", Y),
    (r"\frac{1}{2}", r"so \boxed{\frac{1}{2}+1}", N),
    # --- malformed LaTeX must not collapse to a prefix
    (r"4\sqrt{2}", r"4\sqrt(2)", Y), ("4", r"4\sqrt(2)", N), ("3", "3)", N), ("2", "2+", N),
    ("2", r"\boxed{\frac{4}{2}", N), ("12", r"12\frac", N), ("1", r"1\sqrt", N),
    # --- several answers in one box
    ("2", r"2 \text{ or } 3", N), ("2", "1, 2, 3", N), ("2", r"2 \text{ and } 3", N), ("2", r"\pm 2", N),
    ("3", "3, 4", N), (r"\{2, 3\}", r"2 \text{ or } 3", Y), (r"\{2, 3\}", "3, 2", Y), ("2", r"\{2\}", Y),
    # --- equations (x = 3 against 3) and plain-text equations that collapse to 0 = 0
    ("x=3", "3", Y), ("x=3", "x = 3", Y), ("x=3", "y=3", N), ("x=3", "x=4", N), ("3", "x=3", Y),
    ("3", "x=4", N), ("y=2x+1", "2x-y+1=0", Y), ("y=2x+1", "y-1=2x", Y), ("y=2x+1", "y=2x+2", N),
    ("y=2x+1", "y=x+1", N), ("x^2+y^2=1", "y^2+x^2=1", Y), ("x^2+y^2=1", "x^2+y^2=2", N),
    ("5", "x=x", N), ("5", "0=0", N), ("5", r"\text{answer} = \text{answer}", N), ("y=2x+1", "y=y", N),
    ("x=3", "x+1=1+x", N), ("f(x)=x^2", "x^2", Y), ("f(x)=x^2", "f(x) = x^2", Y), ("f(x)=x^2", "x^3", N),
    # --- intervals and inequalities
    ("[1,2)", "[1,2)", Y), ("[1,2)", "[1, 2)", Y), ("[1,2)", "[1,2]", N), ("[1,2)", "(1,2)", N),
    ("[1,2)", "[1,3)", N), (r"(2,\infty)", "x>2", Y), (r"(2,\infty)", r"(2, \infty)", Y),
    (r"(2,\infty)", r"x\geq2", N), (r"(2,\infty)", r"[2,\infty)", N), (r"x \geq 2", r"[2,\infty)", Y),
    (r"x \geq 2", r"(2,\infty)", N), (r"(-\infty,0)\cup(1,\infty)", r"(1,\infty)\cup(-\infty,0)", Y),
    (r"(-\infty,0)\cup(1,\infty)", r"(-\infty,0]\cup(1,\infty)", N), ("[0,1]", r"\left[0, 1\right]", Y),
    # --- sets
    (r"\{1,2,3\}", r"\{3,2,1\}", Y), (r"\{1,2,3\}", "1,2,3", Y), (r"\{1,2,3\}", r"\{1,2\}", N),
    (r"\{1,2,3\}", r"\{1,2,4\}", N), (r"\{-2,2\}", r"\pm 2", Y), (r"\{-2,2\}", "2", N),
    (r"\{\frac{1}{2}, 3\}", r"\{3, 0.5\}", Y), (r"\emptyset", r"\emptyset", Y), (r"\emptyset", r"\{0\}", N),
    # --- tuples (order matters)
    ("(1,2)", "(1, 2)", Y), ("(1,2)", "(2,1)", N), ("(1,2)", "(1,2,3)", N), ("(3,-1)", "(3, -1)", Y),
    ("(3,-1)", "(-1,3)", N), (r"(\frac12, 3)", "(0.5, 3)", Y), ("(1,2,3)", "(1,2,3)", Y),
    ("(1,2,3)", "(3,2,1)", N), ("(1, 2)", "1, 2", Y),
    # --- matrices
    (r"\begin{pmatrix}1&2\\3&4\end{pmatrix}", r"\begin{bmatrix}1&2\\3&4\end{bmatrix}", Y),
    (r"\begin{pmatrix}1&2\\3&4\end{pmatrix}", r"\begin{pmatrix}1&3\\2&4\end{pmatrix}", N),
    (r"\begin{pmatrix}1&2\\3&4\end{pmatrix}", r"\begin{pmatrix}1&2\end{pmatrix}", N),
    (r"\begin{pmatrix}1\\2\end{pmatrix}", r"\begin{pmatrix}1 & 2\end{pmatrix}", N),
    (r"\begin{pmatrix}\frac12&0\\0&1\end{pmatrix}", r"\begin{pmatrix}0.5&0\\0&1\end{pmatrix}", Y),
    # --- complex numbers
    ("3+4i", "4i+3", Y), ("3+4i", "3-4i", N), ("3+4i", "4+3i", N), ("-1", "i^2", Y), ("2i", "-2i", N),
    ("1+i", r"\frac{2}{1-i}", Y), ("1+i", r"\frac{2}{1+i}", N),
    # --- infinity
    (r"\infty", r"\infty", Y), (r"\infty", r"+\infty", Y), (r"\infty", r"-\infty", N),
    (r"\infty", "10^{100}", N), (r"-\infty", r"-\infty", Y),
    # --- percent
    (r"50\%", r"50\%", Y), (r"50\%", "50", Y), (r"50\%", "0.5", Y), (r"50\%", r"\frac12", Y),
    (r"50\%", "5", N), (r"50\%", "0.05", N), ("0.25", r"25\%", Y), (r"12.5\%", "12.5", Y),
    (r"12.5\%", "0.125", Y), (r"12.5\%", "12.6", N), ("40", r"40\%", Y), ("40", r"4\%", N),
    # --- degrees
    (r"30^\circ", "30", Y), (r"30^\circ", r"30^{\circ}", Y), (r"30^\circ", "30°", Y), (r"30^\circ", "60", N),
    ("45", r"45^\circ", Y), ("45", r"54^\circ", N),
    # --- symbolic expressions
    ("x^2+2x+1", "(x+1)^2", Y), ("x^2+2x+1", "(1+x)^2", Y), ("x^2+2x+1", "x^2+2x", N),
    ("x^2+2x+1", "(x-1)^2", N), ("(x+1)^2", "(y+1)^2", N), (r"\frac{x}{2}", "0.5x", Y),
    (r"\frac{x}{2}", "x/2", Y), (r"\frac{x}{2}", "2x", N), (r"\sin(2x)", r"2\sin(x)\cos(x)", Y),
    (r"\sin(2x)", r"2\sin(x)", N), (r"\sqrt{x^2}", "x", N), (r"|x|", r"\sqrt{x^2}", Y),
    (r"\frac{x^2-1}{x-1}", "x+1", Y), (r"a^2-b^2", "(a-b)(a+b)", Y), (r"a^2-b^2", "(a-b)^2", N),
    (r"\frac{1}{x}+\frac{1}{y}", r"\frac{x+y}{xy}", Y), (r"\frac{1}{x}+\frac{1}{y}", r"\frac{2}{x+y}", N),
    # --- text and multiple choice
    (r"\text{B}", "B", Y), (r"\text{B}", r"\text{(B)}", Y), (r"\text{B}", "C", N),
    (r"\text{yes}", r"\text{Yes}", Y), (r"\text{yes}", r"\text{no}", N),
    # --- units and thousands separators
    ("12", r"12 \text{ cm}", Y), ("12", r"13 \text{ cm}", N), ("1000000", "1,000,000", Y),
    ("1000000", "1{,}000{,}000", Y), ("1000000", r"1\,000\,000", Y), ("1000000", "1,000,001", N),
    # --- where the answer is (anchors; reasoning never counts)
    ("5", "The answer is 5.", N), ("5", r"<think>\boxed{5}</think>", N),
    ("5", "<think>thinking</think><answer>5</answer>", Y), ("5", r"\fbox{5}", Y),
    ("5", r"so \boxed 5 is it", Y), ("6", r"\boxed{5} no wait \boxed{6}", Y),
    ("5", r"\boxed{5} no wait \boxed{6}", N), ("5", r"<answer>\boxed{5}</answer>", Y),
    ("5", r"<think>I think \boxed{5}", N), ("5", r"$\boxed{5}$", Y), ("5", r"\boxed{$5$}", Y),
    ("5", "<think>so 5</think> 5", N), ("5", r"<think>\boxed{4}</think>then \boxed{5}", Y),
    ("5", r"<answer>4</answer> \boxed{5}", N),
    # --- found in review: each a row (crashes, false positives, false negatives)
    ("5", r"x \in \{5\}", Y), ("5", r"x \in \{5,6\}", N), ("5", r"x \in \mathbb{R}", N), (r"x \in [0,1]", "[0,1]", Y),
    (r"x = \pm 2", r"\pm 2", Y), ("-2, 3", r"x \in \{-2, 3\}", Y), ("2", r"5 \% 6", N), ("2", r"\gcd(4,6)", Y),
    ("2", r"\sqrt{50\%}", N), ("2", r"\cot 0", N), ("2", r"\log_1 5", N), ("4", "2^²", N), ("4", "①^2", N),
    (r"50\%", r"2\begin{pmatrix}1&2\end{pmatrix}", N), ("1", r"\begin{pmatrix}1&2\end{pmatrix}^{x}", N),
    ("x+y", r"x + y^{y^{y^{y^{y^{y}}}}}", N),
    (r"\begin{pmatrix} 3 \\ 4 \end{pmatrix}", r"\begin{pmatrix} 4 \\ 3 \end{pmatrix}", N),
    (r"\begin{pmatrix} 3 \\ 4 \end{pmatrix}", r"\begin{pmatrix} 7 \end{pmatrix}", N),
    (r"\begin{pmatrix} 3 \\ 4 \end{pmatrix}", r"\begin{pmatrix}3\\4\end{pmatrix}", Y),
    (r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}", r"\begin{pmatrix} 1 & 4 \\ 1 & 4 \end{pmatrix}", N),
    (r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}", r"\begin{pmatrix}1&2\\3&4\end{pmatrix}", Y),
    ("0.3", r"\frac13", N), ("0.2", r"\frac14", N), ("0.5", r"\frac{5}{11}", N), ("0.5", r"45\%", N),
    ("2.5", r"\frac{49}{20}", N), ("1.4", r"\sqrt2", N), ("3.1", r"\pi", N), ("0.1", r"\frac17", N),
    ("0.05", r"\frac{1}{19}", N), ("0.33", r"\frac13", Y), ("3.14", r"\pi", Y),
    ("10001", "1.0e4", N), ("10001", r"1.0000\times10^{4}", N), ("1234568", r"1.2346\times10^{6}", N),
    ("20001", "2.0e4", N), ("20000", "2.0e4", Y),
    ("x=5", "3x+7=22", N), ("x=3", "2x=6", N), ("y=2x+1", "x=(y-1)/2", Y),
    ("x=2, y=3", "(3,2)", N), ("x=2, y=3", "(2,3)", Y), ("x=2, y=3", r"\{2,3\}", N), ("(2,3)", "y=2, x=3", N),
    ("(2,3)", "x=2, y=3", Y), ("a=1, b=2", "2, 1", N), ("a=1, b=2", "b=2, a=1", Y),
    ("(1,2)", r"\{1,2\}", N), ("(1,2)", r"x=1 \text{ or } x=2", N), (r"\{1,2\}", "(1,2)", N),
    (r"(0,\infty)", r"\{0,\infty\}", N), (r"(-\infty,\infty)", r"-\infty, \infty", N),
    ("2", r"2 \text{ cm}, 3 \text{ cm}", N), ("10", r"10 \text{ hours } 5 \text{ minutes}", N),
    ("5", r"5 \text{ apples and } 3 \text{ oranges}", N), ("5", r"5 \text{ (or 6)}", N), ("12", r"12 \text{ cm}^2", Y),
    (r"50\%", r"5000\%", N), (r"50\%", r"0.5\%", N), ("5", r"500\%", Y),
    (r"\emptyset", "x>x", N), (r"\emptyset", r"x \ne x", N), ("x=3", "x = x + 1", N),
    ("yes", "sey", N), ("Evelyn", "Eveyln", N), ("yes", r"\text{Yes}", Y), (r"\text{Evelyn}", "Evelyn", Y),
    ("5", r"<think>a</think> \boxed{5} <think>", N), ("5", r"<think></think><think>\boxed{5}", N),
    ("x>2", "y>2", N), ("x>2", "x>2", Y), ("5", r"\boxed{6 \boxed{5}}", N),
    ("3", r"\text{3}", Y), ("5", r"\textbf{5}", Y), ("5", r"\mathbf{5}", Y), ("5", r"\mathrm{5}", Y),
    ("5", r"\boxed{\text{5}}", Y), ("5", "5,", Y), ("5", "5;", Y), ("5", "**5**", Y),
    (r"\{3\}", r"\{3,3\}", Y), ("5", r"5 \text{ or } 5", Y), (r"\{3,4\}", r"\{3,3,4\}", Y), ("5", r"\boxed{5}\boxed{}", Y),
    (r"e^{\pi\sqrt{163}}", r"e^{\pi\sqrt{163}}", Y), (r"\sqrt2^{2000}", r"2^{1000}", Y), ("3000!", "3000!", Y),
    (r"2^{0.00001}", r"2^{0.00001}", Y),
    # --- issue 13: the 15 bug classes and their families, both directions
    ("x = 1, x = 2", "2", N), ("2", "x = 1, x = 2", N), ("x = 1, x = 2", "1, 2", Y),
    ("x = 1, x = 2", "x=2, x=1", Y), (r"\boxed{1}\boxed{2}", "2", N), (r"\boxed{1}\boxed{2}", "1,2", Y),
    ("1", "1 1/2", N), ("1 1/2", "1.5", Y), (r"1\frac{1}{2}", "1.5", Y), ("E", "E'", N), ("E'", "E'", Y),
    (r"1 - \frac{1}{\mathrm{e}}", "1-1/e", Y), ("3", r"3\mathrm{e}", N), ("500", "0,500", N),
    (r"10,\!000", "10000", Y), (r"10,\!000", "10,000", Y), ("(p,q)=(3,2)", "(3,2)", Y),
    ("(p,q)=(3,2)", "(2,3)", N), ("f(2) < f(1) < f(4)", "f(2) < f(1) < f(4)", Y),
    ("f(2) < f(1) < f(4)", "f(1) < f(2) < f(4)", N), ("x = 5+5+1 = 11", "11", Y), ("x = 5+5+1 = 11", "12", N),
    ("1+2i", "i(2-i)", Y), (r"\frac{3 \pm \sqrt{5}}{2}", r"\frac{3+\sqrt5}{2}, \frac{3-\sqrt5}{2}", Y),
    (r"\frac{3 \pm \sqrt{5}}{2}", r"\frac{3+\sqrt5}{2}", N), (r"5\text{ kg}", r"5\text{ g}", N),
    (r"5\text{ kg}", r"5000\text{ g}", Y), (r"5\text{ kg}", "5", Y), ("y = 1, y = -3", "-3", N),
    ("y = 1, y = -3", r"\{-3, 1\}", Y), ("-3", r"y=-3 \text{ or } y=1", N), ("x=1, y=2, x=3", "(1,2,3)", N),
    (r"\boxed{3}, \boxed{5}", "3, 5", Y), (r"\boxed{3} \text{ and } \boxed{5}", "5", N),
    (r"\{1,2\}", r"\boxed{1} \text{ and } \boxed{2}", Y),
    (r"\{1,2\}", r"\boxed{1} \text{ and } \boxed{2} \text{ and } \boxed{3}", N),
    ("5", r"\boxed{4} \text{ or } \boxed{5}", Y), ("2", "2 1/3", N), ("2 1/3", r"\frac{7}{3}", Y),
    ("-2 1/3", r"-\frac{7}{3}", Y), ("3", "2 4/3", N), ("5", r"\frac{1}{0}", N), ("5", "5/0", N),
    ("A'", "A", N), ("A'B'", "A'B'", Y), ("f'", "f'", Y), (r"\mathrm{e}^2", "e^2", Y),
    ("2", r"2\mathrm{i}", N), (r"2\mathrm{i}", "2i", Y), ("0,5", "0.5", N), ("2000", "02,000", N),
    ("1,000", "1000", Y), (r"1\,234\,567", "1234567", Y), ("1{,}000{,}000", r"1,\!000,\!000", Y),
    ("(a,b,c)=(1,2,3)", "(1,2,3)", Y), ("(a,b,c)=(1,2,3)", "(3,2,1)", N), ("(x, y) = (2, 3)", "x=2, y=3", Y),
    ("(x, y) = (2, 3)", "y=2, x=3", N), ("y=3, x=2", "(3, 2)", Y), ("f(3) > f(1)", "f(1) < f(3)", Y),
    ("f(3) > f(1)", "f(3) < f(1)", N), ("a_1 < a_2 < a_3", "a_3 > a_2 > a_1", Y),
    (r"x = 2 \cdot 3 = 6", "6", Y), ("6", r"x = 2 \cdot 3 = 6", Y), ("5", "x = 2+3 = 6", N),
    ("3-4i", "(2-i)^2", Y), ("3-4i", "(2+i)^2", N), ("i", r"\frac{1}{-i}", Y),
    (r"2 \pm \sqrt{3}", r"2+\sqrt3, 2-\sqrt3", Y), (r"2 \pm \sqrt{3}", r"2+\sqrt3", N),
    (r"2+\sqrt3", r"2 \pm \sqrt{3}", N), (r"x = 1 \pm \sqrt{2}", r"1-\sqrt{2}, 1+\sqrt{2}", Y),
    (r"\pm 1, \pm 2", "-2,-1,1,2", Y),
    (r"\frac{-1 \pm \sqrt{5}}{2}", r"\left\{\frac{-1+\sqrt5}{2}, \frac{-1-\sqrt5}{2}\right\}", Y),
    (r"3 \mp 1", "2, 4", Y), (r"5 \text{ m}", r"500 \text{ cm}", Y), (r"5 \text{ m}", r"5 \text{ cm}", N),
    (r"5 \text{ m}", r"5 \text{ s}", N), (r"60 \text{ km/h}", r"60 \text{ km/hr}", Y),
    (r"2 \text{ hours}", r"120 \text{ minutes}", Y), (r"2 \text{ hours}", r"2 \text{ minutes}", N),
    (r"12 \text{ apples}", r"12 \text{ oranges}", N), (r"12 \text{ apples}", "12", Y),
    (r"12 \text{ apples}", r"12 \text{ apples}", Y), (r"9.8 \text{ m/s}^2", r"9.8\,\mathrm{m/s^2}", Y),
    ("5", r"5 \text{ or more}", N), ("2", r"2 \text{ (or 3)}", N), ("12", "12 cm", Y),
    (r"5\text{ kg}", "5 lb", N), ("2ab", "2ab", Y), ("2", "2ab", N),
    # --- issue 13, unseen forms of the same families (and the conformance table's fixes)
    ("2", r"a = 1 \text{ or } a = 2", N), ("2", r"x = 1 \text{ and } x = 2", N),
    ("x_1 = 1, x_2 = 2", "1, 2", Y), ("3.5", r"3\ 1/2", Y), ("1.5", r"1 \frac{1}{2}", Y),
    ("-1.5", r"-1\frac{1}{2}", Y), ("0.5", r"1 \frac{1}{2}", N), ("5", r"\tan(\pi/2)", N),
    ("5", r"\infty - \infty", N), ("5", r"\frac{0}{0}", N), ("E", r"E^{\prime}", N),
    ("A", r"\overline{A}", N), ("5", "00,500", N), ("50", "0,050", N), ("-i", r"\frac{1}{i}", Y),
    ("i", r"\frac{1}{i}", N), (r"\pm\frac{1}{2}", r"\frac12, -\frac12", Y),
    (r"\pm\frac{1}{2}", r"\frac12", N), (r"x = \pm\sqrt{3}", r"\pm\sqrt3", Y),
    (r"5 \mathrm{~kg}", r"5000 \mathrm{~g}", Y), (r"5 \text{m}^2", r"50000 \text{cm}^2", Y),
    (r"5 \text{m}^2", r"5 \text{cm}^2", N), (r"5 \text{ kg}", r"5 \text{ kilograms}", Y),
    (r"3 \text{ dollars}", r"\$3", Y), ("|AB| = 5", "5", Y), ("|AB| = 5", "|CD| = 5", N),
    ("5", "|AB| = 5", Y), ("6", "2x = 6", N), ("AB = 4, CD = 5", "4, 5", Y), ("AB = 4, CD = 5", "5, 4", N),
    ("11111111100", r"11,\! 111,\! 111,\! 100", Y), ("1/3", r"\frac{1}{3} \textbf{meters}", Y),
    ("1000.99", "1,000.99€", Y), ("10", "10 weeks", Y), (r"70 \text{ days}", r"10 \text{ weeks}", Y),
    ("x = 1, y = 2, z = 3", "(1, 2, 3)", Y), ("z = 3, y = 2, x = 1", "(1, 2, 3)", N),
    ("z = 3, y = 2, x = 1", "(3, 2, 1)", Y),
    (r"\frac{1 \pm \sqrt{5}}{2}", r"\frac{1 + \sqrt{5}}{2} \text{ or } \frac{1-\sqrt5}{2}", Y),
    # --- a decimal gold inside a list, tuple or assignment: its places read from its value
    ("1/3, 1.732, 3.1416", r"\frac13, \sqrt3, \pi", Y), ("1/3, 1.732, 3.1416", r"\frac13, \sqrt3, 3.14", N), ("1.73, 2", r"\sqrt3, 2", Y), ("1.7, 2", r"\sqrt3, 2", N), ("(0.67, 1)", r"(\frac23, 1)", Y), ("(0.67, 1)", r"(\frac{3}{5}, 1)", N), ("x = 0.67", r"\frac{2}{3}", Y), ("x = 0.5", r"\frac{1}{2}", Y), (r"\{0.05, 1\}", r"\{\frac{1}{19}, 1\}", N),
    # --- primes are names of their own (`f'(x)` is not `f(x)`), never dropped
    ("f'(x) = 2x", "2x", Y), ("f'(x) = 2x", "f'(x) = 2x", Y), ("f'(x) = 2x", "f(x) = 2x", N),
    ("f''(x) = 2", "2", Y), ("f''(x) = 2", "f'(x) = 2", N), ("y' = 3x", "3x", Y), ("f'", "f'", Y),
    ("E", "E'", N), ("5", "5'", N), ("x", "x'", N), ("2x", "2x'", N),
]
# fmt: on


@pytest.fixture(scope="module")
def verifier() -> MathVerifier:
    return MathVerifier()


_ANCHORS = ("\\boxed", "\\fbox", "<answer>", "<think>", "answer is")


def _completion(answer: str) -> str:
    """Rows that are whole completions are used as they are; the rest go in a box."""
    return answer if any(a in answer for a in _ANCHORS) else f"\\boxed{{{answer}}}"


def test_table_is_large_and_covers_both_directions() -> None:
    assert len(TABLE) >= 200
    assert sum(1 for *_, e in TABLE if e == Y) >= 80
    assert sum(1 for *_, e in TABLE if e == N) >= 80


@pytest.mark.parametrize(("gold", "answer", "expected"), TABLE)
def test_equivalence(verifier: MathVerifier, gold: str, answer: str, expected: float) -> None:
    item = Item(id="t", completion=_completion(answer), reference=gold)
    [result] = verifier.score([item], MathParams())
    assert result.status == Status.OK, result.details
    assert result.score == expected, (result.reason, result.details)
