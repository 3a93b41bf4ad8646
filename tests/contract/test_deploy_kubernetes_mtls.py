"""The mTLS overlay (deploy/kubernetes/overlays/mtls): cert-manager issues authz's server
certificate and the gateway's client certificate from a private CA, both are mounted, authz
requires the client certificate, the gateway's authz cluster talks TLS with it; every object
validates against the strict schemas, and the real Envoy accepts the gateway config."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml

from authz._support.throwaway_ca import ThrowawayCA
from tests.contract.test_deploy_kubernetes import (
    EXPECTED_OBJECTS,
    KUBE,
    KUBERNETES_VERSIONS,
    Obj,
    _container,
    _kustomize,
    _mount,
    _one,
    _pod,
    _validate,
    _volume,
)
from tests.harness import assert_envoy_config_valid

MTLS = KUBE / "overlays" / "mtls"
CERT_MANAGER = {
    ("Issuer", "authz-selfsigned"),
    ("Issuer", "authz-ca"),
    ("Certificate", "authz-ca"),
    ("Certificate", "authz"),
    ("Certificate", "envoy-gateway"),
}


@pytest.fixture(scope="module")
def mtls() -> list[Obj]:
    return _kustomize(MTLS)


def _base_name(obj: Obj) -> str:
    name: str = obj["metadata"]["name"]
    return name.rsplit("-", 1)[0] if obj["kind"] == "ConfigMap" else name


def test_renders_every_object_and_each_validates(mtls: list[Obj]) -> None:
    assert {(o["kind"], _base_name(o)) for o in mtls} == EXPECTED_OBJECTS | CERT_MANAGER
    for obj in mtls:
        for version in KUBERNETES_VERSIONS:
            try:
                _validate(obj, version)
            except Exception as exc:
                pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} (k8s {version}): {exc}")


def test_the_cert_manager_schemas_reject_a_typo(mtls: list[Obj]) -> None:
    certificate = copy.deepcopy(_one(mtls, "Certificate", "authz"))
    certificate["spec"]["dnsName"] = ["authz-grpc"]
    with pytest.raises(jsonschema.ValidationError):
        _validate(certificate, KUBERNETES_VERSIONS[0])
    certificate = copy.deepcopy(_one(mtls, "Certificate", "authz"))
    certificate["spec"]["usages"] = ["server-auth"]
    with pytest.raises(jsonschema.ValidationError):
        _validate(certificate, KUBERNETES_VERSIONS[0])
    issuer = copy.deepcopy(_one(mtls, "Issuer", "authz-ca"))
    issuer["spec"]["ca"] = {"secret": "authz-ca"}
    with pytest.raises(jsonschema.ValidationError):
        _validate(issuer, KUBERNETES_VERSIONS[0])


def _issuer_of(mtls: list[Obj], certificate: str) -> Obj:
    ref = _one(mtls, "Certificate", certificate)["spec"]["issuerRef"]
    assert ref.get("kind", "Issuer") == "Issuer"
    return _one(mtls, "Issuer", ref["name"])


def test_the_chain_of_trust(mtls: list[Obj]) -> None:
    ca = _one(mtls, "Certificate", "authz-ca")
    assert ca["spec"]["isCA"] is True
    assert "selfSigned" in _issuer_of(mtls, "authz-ca")["spec"]
    for leaf, usage in (("authz", "server auth"), ("envoy-gateway", "client auth")):
        assert _issuer_of(mtls, leaf)["spec"]["ca"]["secretName"] == ca["spec"]["secretName"]
        assert usage in _one(mtls, "Certificate", leaf)["spec"]["usages"]
    namespace = _one(mtls, "Deployment", "authz")["metadata"]["namespace"]
    dns = _one(mtls, "Certificate", "authz")["spec"]["dnsNames"]
    assert "authz-grpc" in dns and f"authz-grpc.{namespace}.svc" in dns


def _gateway_config(mtls: list[Obj]) -> tuple[Obj, dict[str, str]]:
    data: dict[str, str] = _one(mtls, "ConfigMap", "envoy-gateway")["data"]
    config: Obj = yaml.safe_load(data["envoy.yaml"])
    return config, data


def _authz_tls(config: Obj) -> Any:
    cluster = next(c for c in config["static_resources"]["clusters"] if c["name"] == "authz")
    return cluster["transport_socket"]["typed_config"]


def test_both_sides_mount_their_certificates_and_turn_mtls_on(mtls: list[Obj]) -> None:
    settings = _one(mtls, "ConfigMap", "authz-settings")["data"]
    authz = _container(mtls, "authz")
    mount = _mount(authz, "tls")["mountPath"]
    assert settings["AUTHZ_TLS_CERT_FILE"] == f"{mount}/tls.crt"
    assert settings["AUTHZ_TLS_KEY_FILE"] == f"{mount}/tls.key"
    assert settings["AUTHZ_TLS_CLIENT_CA_FILE"] == f"{mount}/ca.crt"
    assert "subPath" not in _mount(authz, "tls")
    secret = _volume(_pod(mtls, "authz"), "tls")["secret"]["secretName"]
    assert secret == _one(mtls, "Certificate", "authz")["spec"]["secretName"]

    gateway = _container(mtls, "envoy-gateway")
    gateway_secret = _volume(_pod(mtls, "envoy-gateway"), "tls")["secret"]["secretName"]
    assert gateway_secret == _one(mtls, "Certificate", "envoy-gateway")["spec"]["secretName"]
    folder = _mount(gateway, "tls")["mountPath"]
    config, data = _gateway_config(mtls)
    tls = _authz_tls(config)
    assert tls["sni"] == "authz-grpc"
    common = tls["common_tls_context"]
    sans = common["combined_validation_context"]["default_validation_context"][
        "match_typed_subject_alt_names"
    ]
    assert sans == [{"san_type": "DNS", "matcher": {"exact": "authz-grpc"}}]
    sds_files = [
        common["tls_certificate_sds_secret_configs"][0],
        common["combined_validation_context"]["validation_context_sds_secret_config"],
    ]
    for sds in sds_files:
        name = Path(sds["sds_config"]["path_config_source"]["path"]).name
        secret_doc = yaml.safe_load(data[name])["resources"][0]
        assert secret_doc["name"] == sds["name"]
        assert secret_doc[next(k for k in secret_doc if k.endswith(("certificate", "context")))][
            "watched_directory"
        ] == {"path": folder}


def test_real_envoy_accepts_the_mtls_gateway_config(mtls: list[Obj], tmp_path: Path) -> None:
    ca = ThrowawayCA()
    issued = ca.issue("envoy-gateway", client=True)
    certs = tmp_path / "tls"
    certs.mkdir()
    for name, body in (("tls.crt", issued.cert_pem), ("tls.key", issued.key_pem),
                       ("ca.crt", ca.cert_pem)):
        (certs / name).write_bytes(body)
    folder = _mount(_container(mtls, "envoy-gateway"), "tls")["mountPath"]
    config_folder = _mount(_container(mtls, "envoy-gateway"), "config")["mountPath"]
    _, data = _gateway_config(mtls)
    for name, text in data.items():
        moved = text.replace(folder, str(certs)).replace(config_folder + "/", f"{tmp_path}/")
        moved = moved.replace(f"path: {config_folder}\n", f"path: {tmp_path}\n")
        (tmp_path / name).write_text(moved)
    assert_envoy_config_valid(tmp_path / "envoy.yaml", timeout=120)
