"""Bedrock and Vertex keys in Bifrost's config forms (issue 14): what starts, and what is
refused at start-up with its path named (never a credential quoted)."""

from __future__ import annotations

import json

import pytest

from rainbridge.config.load import ConfigError, load_data

SA = json.dumps({"type": "service_account", "client_email": "a@p.iam.gserviceaccount.com",
                 "private_key": "-----BEGIN PRIVATE KEY-----\nsecret-material\n-----END PRIVATE KEY-----\n",
                 "token_uri": "https://oauth2.googleapis.com/token"})


def errors_of(providers: dict) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        load_data({"providers": providers}, {})
    return {p.path: p.message for p in caught.value.errors}


@pytest.mark.parametrize("key", [
    {"name": "static", "bedrock_key_config": {"access_key": "AKIA1", "secret_key": "s", "region": "eu-central-1",
                                              "arn": "arn:aws:bedrock:eu-central-1:1:inference-profile",
                                              "deployments": {"sonnet": "eu.anthropic.claude-sonnet-4-v1:0"}}},
    {"name": "api-key", "value": "bedrock-api-key", "bedrock_key_config": {"region": "us-west-2"}},
    {"name": "default-chain", "value": ""},
], ids=["access-keys", "api-key", "default-chain"])
def test_bedrock_keys_in_bifrosts_forms_are_accepted(key):
    loaded = load_data({"providers": {"bedrock": {"keys": [key]}}}, {})
    assert list(loaded.config.providers) == ["bedrock"]
    assert not [w for w in loaded.warnings if "bedrock" in w.path and "skipped" in w.message]


def test_vertex_key_with_a_service_account_is_accepted():
    key = {"name": "sa", "vertex_key_config": {"project_id": "p", "region": "europe-west4", "auth_credentials": SA}}
    loaded = load_data({"providers": {"vertex": {"keys": [key]}}}, {})
    assert loaded.config.providers["vertex"].keys[0].vertex_key_config.region == "europe-west4"


@pytest.mark.parametrize(("config", "path", "words"), [
    ({"access_key": "AKIA1"}, "secret_key", "go together"),
    ({"role_arn": "arn:aws:iam::1:role/r"}, "role_arn", "not an IAM role ARN"),
    ({"region": "us east 1"}, "region", "not an AWS region"),
])
def test_bedrock_key_config_mistakes_are_refused_naming_the_field(config, path, words):
    errors = errors_of({"bedrock": {"keys": [{"name": "k", "bedrock_key_config": config}]}})
    assert words in errors[f"$.providers.bedrock.keys[0].bedrock_key_config.{path}"]


@pytest.mark.parametrize(("config", "path", "words"), [
    ({"project_id": "p", "auth_credentials": "{not json"}, "auth_credentials", "not JSON"),
    ({"project_id": "p", "auth_credentials": json.dumps({"type": "authorized_user", "refresh_token": "r-secret"})},
     "auth_credentials", "only service account keys"),
    ({"project_id": "p", "auth_credentials": json.dumps({"type": "service_account", "private_key": "pk-secret"})},
     "auth_credentials", "lacks client_email, token_uri"),
])
def test_vertex_key_config_mistakes_are_refused_without_quoting_credentials(config, path, words):
    errors = errors_of({"vertex": {"keys": [{"name": "k", "vertex_key_config": config}]}})
    message = errors[f"$.providers.vertex.keys[0].vertex_key_config.{path}"]
    assert words in message and "secret" not in message


def test_a_custom_provider_on_bedrock_needs_no_base_url():
    entry = {"custom_provider_config": {"base_provider_type": "bedrock"}, "keys": [{"name": "k", "value": "api-key"}]}
    assert "aws-eu" in load_data({"providers": {"aws-eu": entry}}, {}).config.providers


def test_a_vertex_key_without_project_id_is_left_out_and_the_gateway_starts():
    """Bifrost's examples/configs/loadtest: a vertex key without vertex_key_config. Bifrost
    starts and fails each request that picks it; rainbridge leaves the key out, warned by
    path, and skips a vertex provider left without keys."""
    usable = {"name": "sa", "vertex_key_config": {"project_id": "p", "region": "us-central1", "auth_credentials": SA}}
    loaded = load_data({"providers": {"vertex": {"keys": [{"name": "bare", "value": "sk-123"}, usable]},
                                      "gcp": {"type": "vertex", "keys": [{"name": "k", "vertex_key_config": {"region": "us-central1"}}]},
                                      "openai": {"keys": [{"name": "o", "value": "sk-o"}]}}}, {})
    assert [k.name for k in loaded.config.providers["vertex"].keys] == ["sa"]
    assert "gcp" not in loaded.config.providers and "openai" in loaded.config.providers
    assert sorted(w.path for w in loaded.warnings if "project_id" in w.path + w.message) == [
        "$.providers.gcp", "$.providers.gcp.keys[0].vertex_key_config.project_id",
        "$.providers.vertex.keys[0].vertex_key_config.project_id"]


def test_vertex_without_keys_is_refused():
    assert "vertex_key_config" in errors_of({"vertex": {"keys": []}})["$.providers.vertex.keys"]


def test_vertex_auth_credentials_naming_a_key_file_read_it_as_google_application_credentials_does(tmp_path):
    """``"auth_credentials": "env.GOOGLE_APPLICATION_CREDENTIALS"``: that variable
    conventionally holds the key file's path, not its contents."""
    key_file = tmp_path / "sa.json"
    key_file.write_text(SA)
    key = {"name": "sa", "vertex_key_config": {"project_id": "p", "region": "us-central1",
                                               "auth_credentials": "env.GOOGLE_APPLICATION_CREDENTIALS"}}
    loaded = load_data({"providers": {"vertex": {"keys": [key]}}}, {"GOOGLE_APPLICATION_CREDENTIALS": str(key_file)})
    assert [k.name for k in loaded.config.providers["vertex"].keys] == ["sa"]


@pytest.mark.parametrize(("content", "words"), [
    (None, "neither JSON nor a readable key file"),
    ("x" * (64 * 1024 + 1), "larger than 64 KiB"),
    ("not json -- secret", "not JSON"),
    (json.dumps({"type": "authorized_user", "refresh_token": "r-secret"}), "only service account keys"),
])
def test_a_vertex_key_file_that_is_missing_huge_or_wrong_is_refused_without_quoting_it(tmp_path, content, words):
    key_file = tmp_path / "sa.json"
    if content is not None:
        key_file.write_text(content)
    errors = errors_of({"vertex": {"keys": [{"name": "k", "vertex_key_config": {
        "project_id": "p", "region": "us-central1", "auth_credentials": str(key_file)}}]}})
    message = errors["$.providers.vertex.keys[0].vertex_key_config.auth_credentials"]
    assert words in message and "secret" not in message
