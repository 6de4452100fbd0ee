from __future__ import annotations

import pytest

from entra_mw import InsufficientScope, Principal, Requirement


def test_user_principal() -> None:
    p = Principal({"oid": "o", "tid": "t", "sub": "s", "scp": "a b", "ver": "2.0", "azp": "c", "idtyp": "user"})
    assert p.oid == "o" and p.tid == "t" and p.sub == "s"
    assert p.scopes == {"a", "b"}
    assert p.roles == frozenset()
    assert p.token_version == "2.0"
    assert p.client_id == "c"
    assert not p.is_app and not p.is_agent and not p.is_agent_user
    assert p["scp"] == "a b" and len(p) == 7 and set(p) >= {"oid", "scp"}
    with pytest.raises(TypeError):
        p["oid"] = "x"  # type: ignore[index]


def test_app_principal_without_idtyp() -> None:
    p = Principal({"oid": "sp", "sub": "sp", "roles": ["R1", 3], "appid": "c", "ver": "1.0"})
    assert p.is_app
    assert p.roles == {"R1"}
    assert p.client_id == "c"


def test_agent_claims_are_optional_and_strict() -> None:
    agent_user = Principal({"xms_par_app_azp": "bp", "xms_act_fct": "3 11", "xms_sub_fct": "3 13"})
    assert agent_user.is_agent and agent_user.is_agent_user and agent_user.agent_blueprint == "bp"
    assert Principal({"xms_act_fct": "11"}).is_agent
    assert not Principal({"xms_sub_fct": "13 x"}).is_agent_user  # every token must be an integer
    assert not Principal({"xms_sub_fct": 13}).is_agent_user
    assert not Principal({}).is_agent
    assert Principal({}).agent_blueprint is None


def test_wrong_claim_types_do_not_raise() -> None:
    p = Principal({"oid": 1, "tid": None, "scp": ["a"], "roles": "x y", "ver": 2})
    assert p.oid is None and p.tid is None and p.scopes == frozenset() and p.roles == {"x", "y"}
    assert p.token_version is None


def test_repr_has_no_claims_dump() -> None:
    text = repr(Principal({"oid": "o", "secret_claim": "zzz"}))
    assert "zzz" not in text


def test_requirement_scopes_roles_tenants() -> None:
    user = Principal({"scp": "Weather.Read", "tid": "T1"})
    app = Principal({"roles": ["Weather.Read.All"], "tid": "t1"})
    assert Requirement(scopes=["Weather.Read"]).is_satisfied_by(user)
    assert not Requirement(scopes=["Weather.Read"]).is_satisfied_by(app)
    either = Requirement(scopes=["Weather.Read"], roles=["Weather.Read.All"])
    assert either.is_satisfied_by(user) and either.is_satisfied_by(app)
    with pytest.raises(InsufficientScope) as info:
        Requirement(roles=["Admin"]).check(user)
    assert info.value.scope == ("Admin",)
    assert Requirement(tenants=["t1"]).is_satisfied_by(user)
    assert not Requirement(tenants=["t2"]).is_satisfied_by(user)
    assert Requirement().is_satisfied_by(Principal({}))


def test_containers_are_read_only_and_claims_is_a_copy() -> None:
    p = Principal({"roles": ["a", ["b"]], "xms_cc": {"k": ["v"]}, "oid": "o"})
    roles = p["roles"]
    assert roles == ("a", ("b",))
    nested = p["xms_cc"]
    with pytest.raises(TypeError):
        nested["k"] = "x"
    copy = p.claims
    copy["roles"].append("c")
    assert p["roles"] == ("a", ("b",))
    assert dict(p)["oid"] == "o"
