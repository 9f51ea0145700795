//! [`Answer`]: what an action answers, as one typed value. The core builds
//! it, a host that carried out a forwarded action or a read sends it back
//! to the caller in the peer protocol (tagged, so a field renamed on one
//! side fails to decode instead of reading as empty), [`crate::Core`]
//! returns it, and the server turns it into the JSON body it sends
//! ([`Answer::to_json`]), in that one place.

use super::*;
use serde::{Deserialize, Serialize};

/// The answer of an action, one variant per view the API sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "view", content = "body", rename_all = "kebab-case")]
pub enum Answer {
    /// No content (`null` in the API).
    Empty,
    /// A host.
    Host(HostView),
    /// The hosts.
    Hosts(Vec<HostView>),
    /// A VM.
    Vm(Box<VmView>),
    /// The VMs.
    Vms(Vec<VmView>),
    /// A pool.
    Pool(PoolView),
    /// The pools.
    Pools(Vec<PoolView>),
    /// A volume.
    Volume(VolumeView),
    /// The volumes of a pool.
    Volumes(Vec<VolumeView>),
    /// A snapshot.
    Snapshot(SnapshotView),
    /// The snapshots of a volume.
    Snapshots(Vec<SnapshotView>),
    /// An image.
    Image(ImageView),
    /// The image library.
    Images(Vec<ImageView>),
    /// A vswitch.
    Vswitch(VswitchView),
    /// The vswitches.
    Vswitches(Vec<VswitchView>),
    /// A job.
    Job(JobView),
    /// The jobs.
    Jobs(Vec<JobView>),
    /// A plugin.
    Plugin(PluginView),
    /// The plugins.
    Plugins(Vec<PluginView>),
    /// A plugin's quarantine lifted.
    PluginReset(PluginResetView),
    /// Events.
    Events(Vec<EventView>),
    /// The cluster.
    Cluster(Box<ClusterView>),
    /// A join token.
    JoinToken(JoinTokenView),
}

impl Answer {
    /// The JSON body the API sends: the view itself (`null` for
    /// [`Answer::Empty`]), without the tag the peer protocol carries.
    pub fn to_json(&self) -> Result<serde_json::Value, serde_json::Error> {
        use serde_json::to_value as j;
        match self {
            Answer::Empty => Ok(serde_json::Value::Null),
            Answer::Host(v) => j(v),
            Answer::Hosts(v) => j(v),
            Answer::Vm(v) => j(v),
            Answer::Vms(v) => j(v),
            Answer::Pool(v) => j(v),
            Answer::Pools(v) => j(v),
            Answer::Volume(v) => j(v),
            Answer::Volumes(v) => j(v),
            Answer::Snapshot(v) => j(v),
            Answer::Snapshots(v) => j(v),
            Answer::Image(v) => j(v),
            Answer::Images(v) => j(v),
            Answer::Vswitch(v) => j(v),
            Answer::Vswitches(v) => j(v),
            Answer::Job(v) => j(v),
            Answer::Jobs(v) => j(v),
            Answer::Plugin(v) => j(v),
            Answer::Plugins(v) => j(v),
            Answer::PluginReset(v) => j(v),
            Answer::Events(v) => j(v),
            Answer::Cluster(v) => j(v),
            Answer::JoinToken(v) => j(v),
        }
    }
}

/// A typed answer's [`Answer`] variant (`()` is [`Answer::Empty`]).
pub trait IntoAnswer {
    /// As an [`Answer`].
    fn into_answer(self) -> Answer;
}

impl IntoAnswer for () {
    fn into_answer(self) -> Answer {
        Answer::Empty
    }
}

impl<T: IntoAnswer> IntoAnswer for Option<T> {
    fn into_answer(self) -> Answer {
        self.map_or(Answer::Empty, IntoAnswer::into_answer)
    }
}

macro_rules! into_answer {
    ($($ty:ty => $variant:ident $(($wrap:path))?;)*) => {
        $(
            impl IntoAnswer for $ty {
                fn into_answer(self) -> Answer {
                    Answer::$variant($($wrap)?(self))
                }
            }
        )*
    };
}

into_answer! {
    HostView => Host;
    Vec<HostView> => Hosts;
    VmView => Vm(Box::new);
    Vec<VmView> => Vms;
    PoolView => Pool;
    Vec<PoolView> => Pools;
    VolumeView => Volume;
    Vec<VolumeView> => Volumes;
    SnapshotView => Snapshot;
    Vec<SnapshotView> => Snapshots;
    ImageView => Image;
    Vec<ImageView> => Images;
    VswitchView => Vswitch;
    Vec<VswitchView> => Vswitches;
    JobView => Job;
    Vec<JobView> => Jobs;
    PluginView => Plugin;
    Vec<PluginView> => Plugins;
    PluginResetView => PluginReset;
    Vec<EventView> => Events;
    ClusterView => Cluster(Box::new);
    JoinTokenView => JoinToken;
}
