"""The request view: the path and query string a decision reads."""

from __future__ import annotations

import pytest

from authz.core.request import RequestView


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        ("/a/b", "/a/b", ""),
        ("/a/b?", "/a/b", ""),
        ("/a/b?token=x&c=1", "/a/b", "token=x&c=1"),
        ("/a?b?c", "/a", "b?c"),
        ("", "", ""),
    ],
)
def test_path_and_query_split_at_the_first_question_mark(target: str, path: str, query: str,
                                                         ) -> None:
    view = RequestView(authorization=None, source_ip=None, path=target)
    assert (view.path_only, view.query) == (path, query)
