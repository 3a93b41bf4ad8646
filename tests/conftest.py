"""Session-wide fixtures: started the first time a test asks for them, stopped at the end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import settings

from tests.hls import HlsStream, make_hls
from tests.tomcat import Tomcat, tomcat_server

# No property test is about speed: a busy machine must not trip hypothesis's 200 ms deadline.
settings.register_profile("suite", deadline=None)
settings.load_profile("suite")

# The stream tests/hls.py makes: an id no other test serves, so its files shadow nothing.
HLS_STREAM_ID = "testsrc1"


@pytest.fixture(scope="session")
def tomcat() -> Iterator[Tomcat]:
    """One real Tomcat with the Ant Media-shaped webapps (tests/tomcat.py) for the run."""
    with tomcat_server() as server:
        yield server


@pytest.fixture(scope="session")
def hls_stream(tmp_path_factory: pytest.TempPathFactory) -> HlsStream:
    """A 4 s HLS stream of ffmpeg's test picture, 1 s segments named as Ant Media names
    stream `testsrc1`'s files (tests/hls.py), made once for the run."""
    return make_hls(tmp_path_factory.mktemp("hls"), HLS_STREAM_ID)
