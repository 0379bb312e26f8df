import pytest
from ansible.module_utils import kubeharden_nft as nft


def test_render_replaces_only_its_own_table():
    text = nft.render("inet kubeharden", [
        {"proto": "tcp", "ports": [22], "sources": ["192.0.2.0/24", "2001:db8::/32"], "comment": "ssh"},
        {"proto": "udp", "ports": ["30000-32767"], "comment": "NodePort udp"}])
    lines = text.splitlines()
    assert lines[1:4] == ["table inet kubeharden", "delete table inet kubeharden", "table inet kubeharden {"]
    assert "flush" not in text
    assert '\t\tip saddr { 192.0.2.0/24 } tcp dport { 22 } accept comment "ssh"' in lines
    assert '\t\tip6 saddr { 2001:db8::/32 } tcp dport { 22 } accept comment "ssh"' in lines
    assert '\t\tudp dport { 30000-32767 } accept comment "NodePort udp"' in lines
    assert "\t\ttype filter hook input priority filter; policy drop;" in lines


@pytest.mark.parametrize(("rule", "message"), [
    ({"ports": [0]}, "0 is not a port"), ({"ports": ["80-20"]}, "'80-20' is not a port"),
    ({"ports": [22], "sources": ["10.0.0.0/33"]}, "'10.0.0.0/33' is not an IP address or CIDR"),
    ({"ports": [22], "proto": "icmp"}, "proto must be tcp or udp"),
])
def test_bad_rules_are_refused(rule, message):
    with pytest.raises(nft.RuleError, match=message):
        nft.render("inet kubeharden", [rule])


def test_covers():
    assert nft.covers([], "192.0.2.1")
    assert nft.covers(["192.0.2.0/24"], "192.0.2.1")
    assert not nft.covers(["198.51.100.0/24"], "192.0.2.1")
