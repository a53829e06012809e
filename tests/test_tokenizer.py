"""Token counters: the Arrow count of the whitespace tokenizer equals str.split()'s on rendered
lines, whatever the text; views over a store count the same either way."""
from __future__ import annotations

import random

import pyarrow as pa
from hypothesis import given, settings, strategies as st

from ctxdb.tokenizer import WhitespaceTokenizer
from ctxdb.view import render_line

# every character str.split() treats as whitespace, and neighbours that it does not
SPACES = " \t\n\v\f\r\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u200a\u2028\u2029\u202f\u205f\u3000\u200b\x00-é日🚀"


def _python(texts: list[str]) -> list[int]:
    return [len(render_line(t).split()) for t in texts]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from(list(SPACES) + list("ab1,.")), max_size=30), max_size=20))
def test_count_lines_equals_split_of_rendered_lines(texts):
    tok = WhitespaceTokenizer()
    assert tok.count_lines(pa.array(texts, pa.string())) == _python(texts)


def test_count_lines_on_chunked_and_sliced_arrays():
    rnd = random.Random(3)
    texts = ["".join(rnd.choice(SPACES + "abc") for _ in range(rnd.randrange(0, 40))) for _ in range(5000)]
    tok = WhitespaceTokenizer()
    arr = pa.chunked_array([pa.array(texts[:1234]), pa.array(texts[1234:])])
    assert tok.count_lines(arr) == _python(texts)
    assert tok.count_lines(pa.array(texts).slice(100, 50)) == _python(texts[100:150])
    assert tok.count_lines(pa.array([], pa.string())) == []
    # the common case really is counted by Arrow: ASCII words and spaces, newlines, tabs
    assert tok.count_lines(pa.array(["Order 7 is paid (UPS, 12 EUR)", "a\nb\tc", "", "  x  "])) == [8, 4, 1, 2]
