//! Token rules: scopes, lifetimes, names.
use super::*;

fn spec(role: Role, gateway: Option<&str>) -> TokenSpec {
    TokenSpec {
        role,
        name: "n".into(),
        ttl_days: 1,
        gateway: gateway.map(str::to_string),
        created_by: "cli".into(),
    }
}

#[test]
fn a_gateway_token_names_its_gateway_and_no_other_token_does() {
    assert!(check_spec(&spec(Role::Gateway, Some("GW-0001"))).is_ok());
    assert!(check_spec(&spec(Role::Gateway, Some(ANY_GATEWAY))).is_ok());
    assert!(check_spec(&spec(Role::Gateway, None)).is_err());
    assert!(check_spec(&spec(Role::Gateway, Some("GW 1"))).is_err());
    assert!(check_spec(&spec(Role::Clinician, Some("GW-0001"))).is_err());
    assert!(check_spec(&spec(Role::Clinician, None)).is_ok());
    let mut s = spec(Role::Admin, None);
    s.ttl_days = 0;
    assert!(check_spec(&s).is_err());
    s.ttl_days = MAX_TTL_DAYS + 1;
    assert!(check_spec(&s).is_err());
    s.ttl_days = 1;
    s.name = "a\nb".into();
    assert!(check_spec(&s).is_err());
}

#[test]
fn an_issued_token_never_prints_its_secret() {
    let i = Issued {
        secret: "vlt_very-secret".into(),
        row: TokenRow {
            id: "tok_1".into(),
            role: "admin".into(),
            name: "n".into(),
            gateway: None,
            created_at: 0,
            created_by: "cli".into(),
            expires_at: 1,
            revoked_at: None,
            revoked_by: None,
            last_used_at: None,
        },
    };
    assert!(!format!("{i:?}").contains("very-secret"));
}

#[test]
fn a_household_token_names_its_household_and_reads_only_it() {
    let mut s = spec(Role::Household, Some("HH-0001"));
    assert!(check_spec(&s).is_ok());
    s.gateway = None;
    assert!(check_spec(&s).is_err());
    s.gateway = Some("not a household".into());
    assert!(check_spec(&s).is_err());
    s.gateway = Some("*".into());
    assert!(
        check_spec(&s).is_err(),
        "no household token reads every household"
    );
}
