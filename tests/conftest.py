"""Session-wide fixtures: started the first time a test asks for them, stopped at the end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.tomcat import Tomcat, tomcat_server


@pytest.fixture(scope="session")
def tomcat() -> Iterator[Tomcat]:
    """One real Tomcat with the Ant Media-shaped webapps (tests/tomcat.py) for the run."""
    with tomcat_server() as server:
        yield server
