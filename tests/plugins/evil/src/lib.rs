//! A scheduler that misbehaves on purpose, chosen by the name of the VM to
//! place. Any other name gets a well-behaved answer (the first eligible host),
//! so the same loaded plugin shows that a failed call leaves nothing behind.
//!
//! | VM name       | behaviour                                           |
//! |---------------|-----------------------------------------------------|
//! | `loop`        | spins forever                                       |
//! | `alloc-bomb`  | allocates until the memory cap stops it             |
//! | `recurse`     | unbounded recursion                                 |
//! | `panic`       | panics                                              |
//! | `huge-output` | answers with a 32 MiB reason string                 |
//! | `bad-host`    | places the VM on a host that does not exist         |
//! | `log-flood`   | logs 128 KiB messages in a loop, then answers       |
//! | `slow`        | busy-waits 30 ms (monotonic clock), then answers    |
//!
//! `rebalance` answers the moves its `moves` setting holds (their JSON form,
//! docs/plugin-json.md), or none: the validator tests send hostile moves
//! that way.

use nasvisor_plugin_sdk::prelude::*;

#[derive(Debug, Default)]
pub struct Evil;

#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(n: u64, acc: &mut Vec<u64>) -> u64 {
    acc.push(n);
    let r = recurse(n + 1, acc);
    r.wrapping_add(acc[acc.len() / 2])
}

impl SchedulerPolicy for Evil {
    fn place(
        &self,
        env: &dyn Env,
        _view: &ClusterView,
        req: &PlacementRequest,
    ) -> Result<Placement, PluginError> {
        let first = req.eligible_hosts.first().cloned().unwrap_or_default();
        match req.vm.name.as_str() {
            "loop" => {
                let mut x: u64 = 1;
                loop {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            }
            "alloc-bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![0xa5; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "recurse" => {
                let mut acc = Vec::new();
                let r = recurse(0, &mut acc);
                Ok(Placement {
                    host: first,
                    passive_host: None,
                    reason: r.to_string(),
                })
            }
            "panic" => panic!("evil plugin panics on purpose"),
            "huge-output" => Ok(Placement {
                host: first,
                passive_host: None,
                reason: "x".repeat(32 << 20),
            }),
            "bad-host" => Ok(Placement {
                host: "no-such-host".into(),
                passive_host: None,
                reason: "lying".into(),
            }),
            "log-flood" => {
                let big = "y".repeat(128 << 10);
                for _ in 0..50 {
                    env.info(&big);
                }
                Ok(Placement {
                    host: first,
                    passive_host: None,
                    reason: "flooded".into(),
                })
            }
            "slow" => {
                let start = env.monotonic_now_ns();
                while env.monotonic_now_ns() - start < 30_000_000 {
                    std::hint::spin_loop();
                }
                Ok(Placement {
                    host: first,
                    passive_host: None,
                    reason: "slow".into(),
                })
            }
            _ => Ok(Placement {
                host: first,
                passive_host: None,
                reason: "first eligible".into(),
            }),
        }
    }

    fn rebalance(
        &self,
        env: &dyn Env,
        _view: &ClusterView,
    ) -> Result<Vec<RebalanceMove>, PluginError> {
        match env.setting("moves") {
            None => Ok(vec![]),
            Some(m) => serde_json::from_str(&m)
                .map_err(|e| PluginError::new(ErrorCode::BadSettings, format!("moves: {e}"))),
        }
    }
}

nasvisor_plugin_sdk::export_scheduler!(Evil);
