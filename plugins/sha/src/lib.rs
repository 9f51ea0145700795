//! # nasvisor's default SHA policy (DRBD 9)
//!
//! An SHA pair is two NAS boxes replicating storage with DRBD; the cluster
//! counts it as one host. This policy:
//!
//! - reads the pair's status, either `drbdsetup status --json` (with the
//!   small strict parser in [`json`]) or `drbdadm status` text, into a model
//!   ([`drbd`]) and maps it to the standard [`ShaPairState`] ([`state`]);
//! - checks a pair before the service is installed on it ([`check`]);
//! - reacts to state changes with holds and notices, never VM moves
//!   ([`react`]).
//!
//! Settings are documented in [`settings`].

pub mod check;
pub mod drbd;
pub mod json;
pub mod react;
pub mod settings;
pub mod state;
#[cfg(test)]
mod testutil;
pub mod text;

use nasvisor_plugin_sdk::prelude::*;

/// The default SHA policy for DRBD 9 pairs.
#[derive(Debug, Default)]
pub struct DefaultSha;

impl ShaPolicy for DefaultSha {
    /// See [`check::check_setup`].
    fn check_setup(
        &self,
        env: &dyn Env,
        host: &HostInfo,
        raw: &str,
    ) -> Result<SetupCheck, PluginError> {
        check::check_setup(env, host, raw)
    }

    /// See [`check::parse_status`].
    fn parse_status(&self, env: &dyn Env, raw: &str) -> Result<ShaPairState, PluginError> {
        check::parse_status(env, raw)
    }

    /// See [`react::on_state_change`].
    fn on_state_change(
        &self,
        env: &dyn Env,
        view: &ClusterView,
        host: &str,
        previous: Option<&ShaPairState>,
        current: &ShaPairState,
    ) -> Result<Vec<HaAction>, PluginError> {
        react::on_state_change(env, view, host, previous, current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    #[test]
    fn trait_methods_delegate() {
        let p = DefaultSha;
        let env = env_with(&[]);
        assert_eq!(p.parse_status(&env, HEALTHY_JSON).unwrap(), healthy());
        assert!(
            p.check_setup(&env, &sha_host("h1", ShaRole::Primary), HEALTHY_TEXT)
                .unwrap()
                .ok
        );
        assert!(p
            .on_state_change(&env, &ClusterView::default(), "h", None, &healthy())
            .is_ok());
    }

    #[test]
    fn hostile_inputs_never_panic() {
        let p = DefaultSha;
        let env = env_with(&[]);
        let nasty = [
            "\0",
            "[",
            "{",
            "[{}]",
            "[{\"name\":\"\u{0}\"}]",
            "r0 role:\n",
            "r0 role:Primary\n\tpeer\n\t\tvolume:-1\n",
            "r0 role:Primary\n  peer role:Secondary\n      \n    replication\n",
            "\u{feff}",
            "\u{feff}[",
            "é role:Primary\n é:é\n  é\n    é:é",
            "[{\"name\":\"r0\",\"devices\":[{\"volume\":1e300}]}]",
        ];
        for raw in nasty {
            let _ = p.parse_status(&env, raw);
            let c = p
                .check_setup(&env, &sha_host("h1", ShaRole::Primary), raw)
                .unwrap();
            assert_eq!(c.ok, c.problems.is_empty());
        }
    }
}

nasvisor_plugin_sdk::export_sha!(DefaultSha);
