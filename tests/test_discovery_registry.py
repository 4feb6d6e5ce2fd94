"""The registry: one ``make`` per backend module, errors that name the field or the extra."""

from __future__ import annotations

import pytest

from rainbridge.cluster.discovery.base import DiscoveryConfigError
from rainbridge.cluster.discovery.registry import EXTRAS, factory, make_discovery
from rainbridge.config.schema import DiscoveryConfig


def test_unknown_type_names_the_field():
    with pytest.raises(DiscoveryConfigError, match=r"\$\.cluster_config\.discovery\.type"):
        factory("zookeeper")


def test_missing_type_names_the_field():
    with pytest.raises(DiscoveryConfigError, match=r"discovery\.type: required"):
        make_discovery(DiscoveryConfig(enabled=True), ("127.0.0.1", 7946), "n1", {})


def test_every_type_of_the_schema_has_an_extra_entry():
    import typing

    from rainbridge.config.schema import DiscoveryConfig as Schema

    kinds = typing.get_args(typing.get_args(typing.get_type_hints(Schema)["type"])[0])
    assert set(kinds) == set(EXTRAS)
