"""Header facts: the x-jwt- namespace, field names (RFC 9110 5.1), values authz may set."""

from __future__ import annotations

import pytest

from authz.core.headers import JWT_HEADER_PREFIX, SUB_HEADER, is_header_name, legal_header_value


def test_sub_is_forwarded_inside_the_stripped_namespace() -> None:
    assert SUB_HEADER == "x-jwt-sub" and SUB_HEADER.startswith(JWT_HEADER_PREFIX)


@pytest.mark.parametrize("name", ["x-jwt-role", "X-Jwt-Role", "a", "x!#$%&'*+.^_`|~9"])
def test_tchar_names_are_header_names(name: str) -> None:
    assert is_header_name(name)


@pytest.mark.parametrize(
    "name", ["", "x-jwt-a\r\nx-evil", "x-jwt-a\n", "x jwt", "x-jwt:a", ":path", "x-jwt-\x00", "x-é"]
)
def test_anything_else_is_not(name: str) -> None:
    assert not is_header_name(name)


@pytest.mark.parametrize("value", ["alice", "a b", "user@example.com", "x" * 4096, "{\"a\":1}"])
def test_visible_ascii_values_are_legal(value: str) -> None:
    assert legal_header_value(value)


@pytest.mark.parametrize(
    "value", ["", " alice", "alice ", "a\r\nb", "a\tb", "a\x00", "é", "x" * 4097, "\udc80"]
)
def test_values_that_could_be_mis_split_are_not(value: str) -> None:
    assert not legal_header_value(value)
