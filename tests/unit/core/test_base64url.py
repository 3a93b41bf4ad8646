"""base64url (RFC 7515 section 2): one encoder, one strict decoder."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authz.core.base64url import b64url, b64url_decode


@given(st.binary(max_size=200))
def test_every_byte_string_round_trips_unpadded(data: bytes) -> None:
    text = b64url(data)
    assert "=" not in text and "+" not in text and "/" not in text
    assert b64url_decode(text) == data
    assert text == base64.urlsafe_b64encode(data).decode().rstrip("=")


@pytest.mark.parametrize(
    "text",
    ["A", "AAAAA", "QQ==", "QQ=", "+w", "/w", "Q Q", "QQ\n", "é", "QR", "QUJ", "QUJDRA=="],
)
def test_padding_other_alphabets_stray_bytes_and_loose_final_bits_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        b64url_decode(text)


def test_non_canonical_final_bits_pass_only_when_asked() -> None:
    # "QR" and "QQ" both decode to b"A" (the last letter's 4 unused bits differ).
    assert b64url_decode("QQ") == b"A"
    assert b64url_decode("QR", canonical=False) == b"A"
    with pytest.raises(ValueError):
        b64url_decode("QR=", canonical=False)
