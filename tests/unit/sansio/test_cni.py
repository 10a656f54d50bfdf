"""CNI wire format: config parsing/selection, per-plugin stdin, environment, results, errors."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from crirt.sansio import cni

DEPLOY_CONFLIST = (
    Path(__file__).resolve().parents[3] / "deploy" / "cni" / "10-crirt-bridge.conflist"
)

BRIDGE = {
    "type": "bridge",
    "bridge": "crirt0",
    "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]]},
}
PORTMAP = {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True}


def conflist(version: str = "1.0.0", **extra: object) -> bytes:
    doc = {"cniVersion": version, "name": "crirt", "plugins": [BRIDGE, PORTMAP], **extra}
    return json.dumps(doc).encode()


# --- parsing ------------------------------------------------------------------------------------


def test_deploy_conflist_is_valid_and_safe() -> None:
    # Given the shipped conflist
    net = cni.parse_config_file(DEPLOY_CONFLIST.name, DEPLOY_CONFLIST.read_bytes())
    # Then it is the bridge + portmap chain of testbed.md §4, with crirt's names
    assert net.name == "crirt"
    assert net.plugin_types == ["bridge", "portmap"]
    bridge, portmap = net.plugins
    assert bridge["bridge"] == "crirt0"
    assert bridge["isGateway"] is True
    assert bridge["isDefaultGateway"] is False  # pods get no default route
    assert bridge["ipMasq"] is False  # and no masquerading
    assert bridge["hairpinMode"] is True
    assert "promiscMode" not in bridge  # conflicts with hairpinMode (testbed.md §7.2)
    assert bridge["ipam"]["type"] == "host-local"
    assert bridge["ipam"]["dataDir"].startswith("/var/lib/crirt/")
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.88.0.0/16", "gateway": "10.88.0.1"}]]
    assert portmap["capabilities"] == {"portMappings": True}
    assert portmap["snat"] is True


def test_parse_config_list_keeps_fields() -> None:
    net = cni.parse_config_list(conflist(disableCheck=True), "10-x.conflist")
    assert (net.name, net.cni_version, net.disable_check, net.source) == (
        "crirt",
        "1.0.0",
        True,
        "10-x.conflist",
    )
    assert net.raw["plugins"][0]["bridge"] == "crirt0"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (b"{not json", "invalid JSON"),
        (b"[]", "expected a JSON object"),
        (json.dumps({"cniVersion": "1.0.0", "plugins": [BRIDGE]}).encode(), "missing network name"),
        (json.dumps({"cniVersion": "1.0.0", "name": "a b", "plugins": [BRIDGE]}).encode(), "name"),
        (json.dumps({"name": "n", "plugins": [BRIDGE]}).encode(), "missing cniVersion"),
        (json.dumps({"cniVersion": "9.9.9", "name": "n", "plugins": [BRIDGE]}).encode(), "9.9.9"),
        (json.dumps({"cniVersion": "1.0", "name": "n", "plugins": [BRIDGE]}).encode(), "1.0"),
        (json.dumps({"cniVersion": "1.0.0", "name": "n", "plugins": []}).encode(), "no plugins"),
        (json.dumps({"cniVersion": "1.0.0", "name": "n", "plugins": [{}]}).encode(), "no type"),
        (
            json.dumps(
                {"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "../sh"}]}
            ).encode(),
            "invalid type",
        ),
        (
            json.dumps(
                {"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "x", "capabilities": 1}]}
            ).encode(),
            "capabilities",
        ),
    ],
)
def test_parse_config_list_rejects(doc: bytes, message: str) -> None:
    with pytest.raises(cni.CniConfigError, match=message):
        cni.parse_config_list(doc, "bad.conflist")


def test_single_conf_is_wrapped_into_a_list() -> None:
    doc = {"cniVersion": "0.4.0", "name": "single", **BRIDGE}
    net = cni.parse_config_file("10-single.conf", json.dumps(doc))
    assert net.plugin_types == ["bridge"]
    assert net.raw == {"cniVersion": "0.4.0", "name": "single", "plugins": [doc]}


def test_conf_extension_refuses_a_list() -> None:
    with pytest.raises(cni.CniConfigError, match="conflist"):
        cni.parse_config_file("10-x.conf", conflist())


def test_select_config_takes_the_lexically_first_valid_file() -> None:
    # Given an invalid file sorting first, a valid one, and a later valid one
    files = [
        ("20-later.conflist", conflist()),
        ("README", b"not a config"),
        ("05-broken.conflist", b"{"),
        ("10-good.conflist", conflist("0.4.0")),
    ]
    # When selecting
    net, skipped = cni.select_config(files)
    # Then the first valid one wins and the broken one is reported
    assert net is not None
    assert net.source == "10-good.conflist"
    assert net.cni_version == "0.4.0"
    assert len(skipped) == 1
    assert "05-broken.conflist" in skipped[0]


def test_select_config_nothing_valid() -> None:
    net, skipped = cni.select_config([("a.conflist", b"{}"), ("b.txt", b"")])
    assert net is None
    assert len(skipped) == 1


def test_config_from_raw_round_trips() -> None:
    net = cni.parse_config_list(conflist())
    again = cni.config_from_raw(json.loads(json.dumps(net.raw)))
    assert again.plugins == net.plugins
    assert again.name == net.name


# --- per-plugin config --------------------------------------------------------------------------


def test_build_plugin_config_injects_name_version_and_prev_result() -> None:
    net = cni.parse_config_list(conflist())
    prev = {"cniVersion": "1.0.0", "ips": [{"address": "10.88.0.2/16"}]}
    first = cni.build_plugin_config(net, 0, None, {"portMappings": []})
    second = cni.build_plugin_config(net, 1, prev, {"portMappings": []})
    assert first["name"] == second["name"] == "crirt"
    assert first["cniVersion"] == second["cniVersion"] == "1.0.0"
    assert "prevResult" not in first
    assert second["prevResult"] == prev
    # the source documents are not modified
    assert "name" not in net.plugins[0]
    assert "prevResult" not in net.plugins[1]


def test_port_mappings_only_reach_plugins_with_the_capability() -> None:
    net = cni.parse_config_list(conflist())
    mappings = [cni.PortMapping(12000, 80).to_cni()]
    caps = {"portMappings": mappings, "bandwidth": {"ingressRate": 1}}
    bridge = cni.build_plugin_config(net, 0, None, caps)
    portmap = cni.build_plugin_config(net, 1, None, caps)
    assert "runtimeConfig" not in bridge
    # only the capabilities the plugin enables, never the others
    assert portmap["runtimeConfig"] == {"portMappings": mappings}


def test_disabled_or_unrequested_capability_gives_no_runtime_config() -> None:
    doc = {
        "cniVersion": "1.0.0",
        "name": "n",
        "plugins": [
            {"type": "portmap", "capabilities": {"portMappings": False}},
            {"type": "x", "capabilities": {"ips": True}, "runtimeConfig": {"stale": 1}},
        ],
    }
    net = cni.parse_config_list(json.dumps(doc))
    caps = {"portMappings": [{"hostPort": 1, "containerPort": 2, "protocol": "tcp"}]}
    assert "runtimeConfig" not in cni.build_plugin_config(net, 0, None, caps)
    assert "runtimeConfig" not in cni.build_plugin_config(net, 1, None, caps)


def test_port_mapping_to_cni() -> None:
    assert cni.PortMapping(12000, 80, "TCP").to_cni() == {
        "hostPort": 12000,
        "containerPort": 80,
        "protocol": "tcp",
    }
    assert cni.PortMapping(53, 53, "udp", "127.0.0.1").to_cni()["hostIP"] == "127.0.0.1"


def test_port_mapping_from_cri_message() -> None:
    # Given CRI PortMapping messages as the sandbox config carries them
    from crirt._gen import api_pb2

    tcp = api_pb2.PortMapping(container_port=80, host_port=12000)
    udp = api_pb2.PortMapping(
        protocol=api_pb2.UDP, container_port=53, host_port=5353, host_ip="127.0.0.1"
    )
    sctp = api_pb2.PortMapping(protocol=api_pb2.SCTP, container_port=9, host_port=9)
    # Then they convert without the network code importing the generated module
    assert cni.PortMapping.from_cri(tcp) == cni.PortMapping(12000, 80, "tcp")
    assert cni.PortMapping.from_cri(udp) == cni.PortMapping(5353, 53, "udp", "127.0.0.1")
    assert cni.PortMapping.from_cri(sctp).protocol == "sctp"


def test_port_mapping_from_cri_rejects_unknown_protocol() -> None:
    bad = SimpleNamespace(protocol=7, container_port=1, host_port=1, host_ip="")
    with pytest.raises(cni.CniConfigError, match="protocol"):
        cni.PortMapping.from_cri(bad)


def test_encode_config_is_compact_json() -> None:
    assert cni.encode_config({"b": 1, "a": [1, 2]}) == b'{"a":[1,2],"b":1}'


def test_del_prev_result_from_040_on() -> None:
    cached = {"cniVersion": "0.4.0", "ips": []}
    assert cni.del_prev_result(cni.parse_config_list(conflist("0.4.0")), cached) == cached
    assert cni.del_prev_result(cni.parse_config_list(conflist("0.3.1")), cached) is None
    assert cni.del_prev_result(cni.parse_config_list(conflist("1.0.0")), None) is None


def test_supports_check() -> None:
    assert cni.supports_check(cni.parse_config_list(conflist("1.0.0")))
    assert not cni.supports_check(cni.parse_config_list(conflist("0.3.1")))
    assert not cni.supports_check(cni.parse_config_list(conflist("1.0.0", disableCheck=True)))


# --- environment --------------------------------------------------------------------------------


def test_build_env_is_complete_and_nothing_else() -> None:
    rt = cni.RuntimeConf(
        container_id="abc",
        netns="/run/crirt/netns/abc",
        args=cni.k8s_args("default", "web", "abc", "uid-1"),
    )
    env = cni.build_env("ADD", rt, ["/opt/cni/bin", "/usr/lib/cni"], "/usr/sbin:/usr/bin")
    assert env == {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "abc",
        "CNI_NETNS": "/run/crirt/netns/abc",
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;"
        "K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=uid-1",
        "CNI_PATH": "/opt/cni/bin:/usr/lib/cni",
        "PATH": "/usr/sbin:/usr/bin",
    }


def test_build_env_rejects_bad_command_and_args() -> None:
    rt = cni.RuntimeConf(container_id="a", netns="", args=(("K", "a;b"),))
    with pytest.raises(cni.CniConfigError, match="not allowed"):
        cni.build_env("DEL", rt, [], "")
    with pytest.raises(cni.CniConfigError, match="unknown CNI command"):
        cni.build_env("GC2", cni.RuntimeConf(container_id="a", netns=""), [], "")


# --- results and errors -------------------------------------------------------------------------

BRIDGE_RESULT = {
    "cniVersion": "1.0.0",
    "interfaces": [
        {"name": "crirt0", "mac": "aa:aa:aa:aa:aa:aa"},
        {"name": "veth1234", "mac": "bb:bb:bb:bb:bb:bb"},
        {"name": "eth0", "mac": "cc:cc:cc:cc:cc:cc", "sandbox": "/run/crirt/netns/abc"},
    ],
    "ips": [
        {"interface": 2, "address": "fd00::5/64", "gateway": "fd00::1"},
        {"interface": 0, "address": "10.88.0.1/16"},
        {"interface": 2, "address": "10.88.0.5/16", "gateway": "10.88.0.1"},
    ],
    "routes": [{"dst": "10.88.0.0/16"}],
    "dns": {"nameservers": ["10.88.0.1"]},
}


def test_summarize_result_picks_the_pod_interface_ipv4_first() -> None:
    res = cni.summarize_result(cni.parse_result(json.dumps(BRIDGE_RESULT).encode()), "eth0")
    assert res.ips == ["10.88.0.5", "fd00::5"]
    assert res.cidrs == ["10.88.0.5/16", "fd00::5/64"]
    assert res.gateways == ["10.88.0.1", "fd00::1"]
    assert res.interface == "eth0"
    assert res.mac == "cc:cc:cc:cc:cc:cc"
    assert res.dns == {"nameservers": ["10.88.0.1"]}


def test_summarize_result_keeps_ips_without_interface_and_skips_bad_ones() -> None:
    result = {
        "cniVersion": "0.4.0",
        "interfaces": [],
        "ips": [{"address": "10.1.0.2/24"}, {"interface": 7, "address": "10.2.0.2/24"}, {}],
    }
    assert cni.summarize_result(result, "eth0").ips == ["10.1.0.2"]


def test_summarize_legacy_020_result() -> None:
    result = {"cniVersion": "0.2.0", "ip4": {"ip": "10.3.0.4/24", "gateway": "10.3.0.1"}}
    res = cni.summarize_result(result, "eth0")
    assert res.ips == ["10.3.0.4"]
    assert res.gateways == ["10.3.0.1"]


@pytest.mark.parametrize("value", [1, 1.5, True, None, "eth0", {"a": 1}])
def test_summarize_a_result_whose_lists_are_not_lists(value: object) -> None:
    # "interfaces": 1 raised TypeError (found by tests/fuzz cni); what is not a list holds
    # nothing: no IPs, or no interface for the IPs' indexes to name.
    for key in ("interfaces", "ips"):
        assert cni.summarize_result({**BRIDGE_RESULT, key: value}, "eth0").ips == []


def test_json_nested_past_the_decoders_limit() -> None:
    # json.loads raised RecursionError (found by tests/fuzz cni): config, result and error
    # output each give their own error instead.
    deep = b'{"cniVersion": "1.0.0", "name": "n", "plugins": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    with pytest.raises(cni.CniConfigError, match="nested too deep"):
        cni.parse_config_list(deep)
    with pytest.raises(cni.CniPluginError, match="invalid JSON"):
        cni.parse_result(deep)
    assert cni.parse_error(deep).code == cni.ERR_INTERNAL


def test_parse_error_uses_the_plugin_json() -> None:
    err = cni.parse_error(
        b'{"cniVersion":"1.0.0","code":7,"msg":"bad config","details":"no subnet"}', b"", 1
    )
    assert (err.code, err.msg, err.details) == (7, "bad config", "no subnet")
    assert str(err) == "bad config: no subnet"


def test_parse_error_without_json_falls_back_to_output() -> None:
    err = cni.parse_error(b"", b"panic: boom\n", 2)
    assert err.code == cni.ERR_INTERNAL
    assert str(err) == "exit status 2: panic: boom"
    assert "signal 9" in str(cni.parse_error(b"", b"", -9))


def test_parse_result_rejects_garbage_and_error_objects() -> None:
    with pytest.raises(cni.CniPluginError, match="invalid JSON"):
        cni.parse_result(b"oops")
    with pytest.raises(cni.CniPluginError, match="non-object"):
        cni.parse_result(b"[1]")
    with pytest.raises(cni.CniPluginError, match="denied") as info:
        cni.parse_result(b'{"code": 11, "msg": "denied"}')
    assert info.value.code == 11


def test_loopback_config() -> None:
    net = cni.loopback_config()
    assert net.plugin_types == ["loopback"]
    conf = cni.build_plugin_config(net, 0, None, {"portMappings": [1]})
    assert conf == {"type": "loopback", "name": "cni-loopback", "cniVersion": "0.3.1"}


def test_version_at_least() -> None:
    assert cni.version_at_least("1.0.0", "0.4.0")
    assert cni.version_at_least("0.10.0", "0.4.0")
    assert not cni.version_at_least("0.3.1", "0.4.0")
