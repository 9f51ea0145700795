//! Access with real cores: the bootstrap admin, users, passwords (argon2),
//! sessions, tokens, throttling, the audit log, and on a real two-host
//! cluster, a token revoked on one host refused at once on the other.

use super::*;
use crate::peer::tests::{join, start};
use crate::NasCore;
use nasvisor_api_types::{ClusterCreate, Core};
use std::net::Ipv4Addr;

const HERE: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn req(caller: &Caller, operation: &'static str) -> Request {
    Request {
        caller: caller.clone(),
        address: HERE,
        operation,
        method: "POST",
        path: format!("/{operation}"),
    }
}

async fn ask(core: &NasCore, caller: &Caller, action: Action) -> Result<Answer, CoreError> {
    core.handle(&req(caller, "test"), action).await
}

fn bearer(core: &NasCore, secret: &str) -> Result<Caller, CoreError> {
    core.authenticate(Credential::Bearer(secret))
}

async fn new_user(core: &NasCore, admin: &Caller, name: &str, role: Role) {
    ask(
        core,
        admin,
        Action::CreateUser(UserCreate {
            name: name.into(),
            password: format!("{name} password"),
            role,
        }),
    )
    .await
    .unwrap();
}

async fn token_of(core: &NasCore, caller: &Caller, create: TokenCreate) -> String {
    match ask(core, caller, Action::CreateToken(create))
        .await
        .unwrap()
    {
        Answer::NewToken(t) => t.token,
        other => panic!("{other:?}"),
    }
}

fn named(name: &str) -> TokenCreate {
    TokenCreate {
        name: name.into(),
        role: None,
        expires_in_s: None,
        user: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_start_makes_one_admin_token_and_logins_make_sessions() {
    let tmp = tempfile::tempdir().unwrap();
    let a = start(tmp.path(), "a", None).await;
    let boot = a.take_bootstrap_token().expect("a bootstrap token");
    assert!(a.take_bootstrap_token().is_none(), "shown once");
    assert!(boot.starts_with("nvt_"));
    let admin = bearer(&a, &boot).unwrap();
    assert_eq!((admin.user.as_str(), admin.role), ("admin", Role::Admin));
    for bad in ["", "nvt_x", &boot[..boot.len() - 1], &"x".repeat(300)] {
        assert!(
            matches!(bearer(&a, bad), Err(CoreError::Unauthenticated { .. })),
            "{bad}"
        );
    }
    // The store holds only the token's digest.
    let raw: Vec<String> = a
        .inner
        .db
        .store()
        .list(kind::TOKEN)
        .into_iter()
        .map(|(k, v, _)| format!("{k} {v}"))
        .collect();
    assert!(!raw.concat().contains(&boot[4..]), "{raw:?}");

    new_user(&a, &admin, "olga", Role::Operator).await;
    let e = a
        .login(
            Login {
                user: "olga".into(),
                password: "wrong password".into(),
            },
            HERE,
        )
        .await
        .unwrap_err();
    assert_eq!(
        e,
        CoreError::Unauthenticated {
            reason: "wrong user name or password".into()
        }
    );
    let e2 = a
        .login(
            Login {
                user: "nobody".into(),
                password: "olga password".into(),
            },
            HERE,
        )
        .await
        .unwrap_err();
    assert_eq!(e, e2, "an unknown user is told the same");
    // The bootstrap admin has no password: it cannot log in with one.
    assert!(a
        .login(
            Login {
                user: "admin".into(),
                password: "x".into()
            },
            HERE
        )
        .await
        .is_err());

    let s = a
        .login(
            Login {
                user: "olga".into(),
                password: "olga password".into(),
            },
            HERE,
        )
        .await
        .unwrap();
    assert_eq!(s.role, Role::Operator);
    let olga = a.authenticate(Credential::Cookie(&s.token)).unwrap();
    assert_eq!(olga.via, CredentialKind::Session);
    assert_eq!(olga.csrf.as_deref(), Some(s.csrf_token.as_str()));
    assert!(
        bearer(&a, &s.token).is_ok(),
        "a session also works as a bearer token"
    );
    // A token is no cookie.
    assert!(a.authenticate(Credential::Cookie(&boot)).is_err());

    // A role change ends olga's sessions.
    ask(
        &a,
        &admin,
        Action::UpdateUser {
            name: "olga".into(),
            update: UserUpdate {
                role: Some(Role::Viewer),
                ..Default::default()
            },
        },
    )
    .await
    .unwrap();
    assert!(bearer(&a, &s.token).is_err());
    // Logout ends a session.
    let s = a
        .login(
            Login {
                user: "olga".into(),
                password: "olga password".into(),
            },
            HERE,
        )
        .await
        .unwrap();
    let viewer = bearer(&a, &s.token).unwrap();
    assert_eq!(viewer.role, Role::Viewer);
    ask(&a, &viewer, Action::Logout).await.unwrap();
    assert!(bearer(&a, &s.token).is_err());

    // Her own password change: the old one no longer works.
    let s = a
        .login(
            Login {
                user: "olga".into(),
                password: "olga password".into(),
            },
            HERE,
        )
        .await
        .unwrap();
    let me = bearer(&a, &s.token).unwrap();
    let wrong = PasswordChange {
        current: "nope nope".into(),
        new: "brand new pw".into(),
    };
    assert!(matches!(
        ask(&a, &me, Action::ChangePassword(wrong)).await,
        Err(CoreError::Invalid { .. })
    ));
    let right = PasswordChange {
        current: "olga password".into(),
        new: "brand new pw".into(),
    };
    ask(&a, &me, Action::ChangePassword(right)).await.unwrap();
    assert!(
        bearer(&a, &s.token).is_err(),
        "sessions end with a new password"
    );
    assert!(a
        .login(
            Login {
                user: "olga".into(),
                password: "olga password".into()
            },
            HERE
        )
        .await
        .is_err());
    assert!(a
        .login(
            Login {
                user: "olga".into(),
                password: "brand new pw".into()
            },
            HERE
        )
        .await
        .is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_bounded_by_their_user_expire_and_are_owned() {
    let tmp = tempfile::tempdir().unwrap();
    let a = start(tmp.path(), "a", None).await;
    let admin = bearer(&a, &a.take_bootstrap_token().unwrap()).unwrap();
    new_user(&a, &admin, "vic", Role::Viewer).await;
    new_user(&a, &admin, "oz", Role::Operator).await;
    let s = a
        .login(
            Login {
                user: "vic".into(),
                password: "vic password".into(),
            },
            HERE,
        )
        .await
        .unwrap();
    let vic = bearer(&a, &s.token).unwrap();

    // A viewer cannot make an operator token, nor one for someone else.
    let mut up = named("up");
    up.role = Some(Role::Operator);
    assert!(
        matches!(ask(&a, &vic, Action::CreateToken(up)).await, Err(CoreError::Invalid { field, .. }) if field == "role")
    );
    let mut other = named("other");
    other.user = Some("oz".into());
    assert!(matches!(
        ask(&a, &vic, Action::CreateToken(other.clone())).await,
        Err(CoreError::Forbidden { .. })
    ));
    // An admin can, for oz, as a viewer token.
    other.role = Some(Role::Viewer);
    let oz_token = token_of(&a, &admin, other).await;
    let oz = bearer(&a, &oz_token).unwrap();
    assert_eq!(
        (oz.user.as_str(), oz.role),
        ("oz", Role::Viewer),
        "the token's role, below the user's"
    );

    // vic's own token; vic sees only it; oz's cannot be revoked by vic.
    let vic_token = token_of(&a, &vic, named("mine")).await;
    let Answer::ApiTokens(mine) = ask(&a, &vic, Action::ListTokens).await.unwrap() else {
        panic!()
    };
    assert_eq!(
        mine.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        vec!["mine"]
    );
    let Answer::ApiTokens(all) = ask(&a, &admin, Action::ListTokens).await.unwrap() else {
        panic!()
    };
    assert_eq!(all.len(), 3, "bootstrap, oz's, vic's");
    let oz_id = all.iter().find(|t| t.user == "oz").unwrap().id.clone();
    assert!(matches!(
        ask(&a, &vic, Action::RevokeToken { id: oz_id.clone() }).await,
        Err(CoreError::NotFound { .. })
    ));
    assert!(bearer(&a, &oz_token).is_ok());
    ask(&a, &admin, Action::RevokeToken { id: oz_id })
        .await
        .unwrap();
    assert!(bearer(&a, &oz_token).is_err());

    // A disabled user's tokens are refused; enabled again, accepted.
    let disable = |d| Action::UpdateUser {
        name: "vic".into(),
        update: UserUpdate {
            disabled: Some(d),
            ..Default::default()
        },
    };
    ask(&a, &admin, disable(true)).await.unwrap();
    let e = bearer(&a, &vic_token).unwrap_err();
    assert!(e.to_string().contains("disabled"), "{e}");
    ask(&a, &admin, disable(false)).await.unwrap();
    assert!(bearer(&a, &vic_token).is_ok());

    // An expired token is refused, saying so.
    let key = secret::key(&vic_token);
    a.inner
        .db
        .update::<TokenRecord, _>(kind::TOKEN, &key, |t| {
            t.expires_unix = Some(unix_now() - 1);
            t.expires_at = Some("2020-01-01T00:00:00Z".into());
            Ok(())
        })
        .await
        .unwrap();
    let e = bearer(&a, &vic_token).unwrap_err();
    assert!(e.to_string().contains("expired"), "{e}");

    // Deleting a user takes its tokens with it.
    ask(&a, &admin, Action::DeleteUser { name: "vic".into() })
        .await
        .unwrap();
    assert!(a.inner.db.get::<TokenRecord>(kind::TOKEN, &key).is_none());
    // The last admin stays.
    for last in [
        Action::DeleteUser {
            name: "admin".into(),
        },
        Action::UpdateUser {
            name: "admin".into(),
            update: UserUpdate {
                role: Some(Role::Operator),
                ..Default::default()
            },
        },
    ] {
        assert!(matches!(
            ask(&a, &admin, last).await,
            Err(CoreError::Conflict { .. })
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_throttled_without_checking_the_password() {
    let tmp = tempfile::tempdir().unwrap();
    let a = start(tmp.path(), "a", None).await;
    let admin = bearer(&a, &a.take_bootstrap_token().unwrap()).unwrap();
    new_user(&a, &admin, "tess", Role::Viewer).await;
    let login = |p: &str| Login {
        user: "tess".into(),
        password: p.into(),
    };
    for _ in 0..throttle::FREE_USER_FAILURES {
        assert!(matches!(
            a.login(login("bad password"), HERE).await,
            Err(CoreError::Unauthenticated { .. })
        ));
    }
    // Even the right password waits now, and the answer costs no hash.
    let t = Instant::now();
    match a.login(login("tess password"), HERE).await {
        Err(CoreError::Throttled { retry_after_s, .. }) => {
            assert!((1..=2).contains(&retry_after_s))
        }
        other => panic!("{other:?}"),
    }
    assert!(t.elapsed() < Duration::from_millis(5), "{:?}", t.elapsed());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(a.login(login("tess password"), HERE).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_entries_are_numbered_and_listed_after_a_sequence_number() {
    let tmp = tempfile::tempdir().unwrap();
    let a = start(tmp.path(), "a", None).await;
    let admin = bearer(&a, &a.take_bootstrap_token().unwrap()).unwrap();
    for (i, status) in [(0u16, 200u16), (1, 403), (2, 202)] {
        a.inner
            .record_audit(AuditEntry {
                user: format!("u{i}"),
                role: Some(Role::Viewer),
                credential: Some("c".into()),
                address: HERE,
                operation: "vmPower",
                request: "POST /api/v1/vms/x/power".into(),
                status,
                result: "ok".into(),
            })
            .await;
    }
    let Answer::Audit(all) = ask(
        &a,
        &admin,
        Action::ListAudit {
            since: None,
            limit: 100,
        },
    )
    .await
    .unwrap() else {
        panic!()
    };
    assert_eq!(
        all.iter().map(|e| (e.seq, e.status)).collect::<Vec<_>>(),
        vec![(1, 200), (2, 403), (3, 202)]
    );
    assert_eq!(all[0].host, "a");
    assert_eq!(all[0].address, "127.0.0.1");
    let Answer::Audit(after) = ask(
        &a,
        &admin,
        Action::ListAudit {
            since: Some(2),
            limit: 100,
        },
    )
    .await
    .unwrap() else {
        panic!()
    };
    assert_eq!(
        after.iter().map(|e| e.user.as_str()).collect::<Vec<_>>(),
        vec!["u2"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_tokens_hold_cluster_wide_and_a_revocation_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let a = start(tmp.path(), "a", None).await;
    let b = start(tmp.path(), "b", None).await;
    let boot_a = a.take_bootstrap_token().unwrap();
    let boot_b = b.take_bootstrap_token().unwrap();
    let admin = bearer(&a, &boot_a).unwrap();
    ask(&a, &admin, Action::CreateCluster(ClusterCreate::default()))
        .await
        .unwrap();
    join(&a, &b).await;
    // b's own first-start token went with its single-host store.
    assert!(
        bearer(&b, &boot_b).is_err(),
        "a joined host's old token is not the cluster's"
    );
    assert!(
        bearer(&b, &boot_a).is_ok(),
        "the cluster's admin token works on b"
    );
    new_user(&a, &admin, "ned", Role::Operator).await;
    // The user made on a logs in on b.
    assert!(b
        .login(
            Login {
                user: "ned".into(),
                password: "ned password".into()
            },
            HERE
        )
        .await
        .is_ok());
    for _ in 0..5 {
        let t = token_of(&a, &admin, named("short-lived")).await;
        let Answer::ApiTokens(all) = ask(&a, &admin, Action::ListTokens).await.unwrap() else {
            panic!()
        };
        let id = all
            .iter()
            .find(|x| x.name == "short-lived")
            .unwrap()
            .id
            .clone();
        assert!(bearer(&b, &t).is_ok());
        ask(&a, &admin, Action::RevokeToken { id }).await.unwrap();
        // No wait: the revocation answered once b had applied it.
        assert!(bearer(&b, &t).is_err(), "revoked on a, still accepted on b");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_of_an_older_release_is_taken_over_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a");
    std::fs::create_dir_all(&dir).unwrap();
    let old = "the-old-admin-token";
    std::fs::write(
        dir.join(LEGACY_TOKEN_FILE),
        format!("{}\n", secret::key(old)),
    )
    .unwrap();
    let a = start(tmp.path(), "a", None).await;
    assert!(
        a.take_bootstrap_token().is_none(),
        "no new token: the old one goes on"
    );
    let c = bearer(&a, old).unwrap();
    assert_eq!((c.user.as_str(), c.role), ("admin", Role::Admin));
    assert!(
        !dir.join(LEGACY_TOKEN_FILE).exists(),
        "taken over once: a revocation sticks"
    );
}
