import pytest

from support import GatewayProcess, MockProcess


@pytest.fixture(scope="session")
def mock(tmp_path_factory):
    m = MockProcess(tmp_path_factory.mktemp("mock"))
    yield m
    m.stop()


@pytest.fixture
def start_gateway(tmp_path):
    started: list[GatewayProcess] = []

    def start(config, *args, **kw):
        gw = GatewayProcess(tmp_path, config, *args, name=f"gw{len(started)}", **kw)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()
