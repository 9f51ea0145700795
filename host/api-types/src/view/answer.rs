//! [`Answer`]: what an action answers, as one typed value. The core builds
//! it, a host that carried out a forwarded action or a read sends it back
//! to the caller in the peer protocol (tagged, so a field renamed on one
//! side fails to decode instead of reading as empty), [`crate::Core`]
//! returns it, and the server turns it into the JSON body it sends
//! ([`Answer::to_json_bytes`]), in that one place.

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
    /// A new session.
    Session(SessionView),
    /// The caller.
    Caller(CallerView),
    /// A user.
    User(UserView),
    /// The users.
    Users(Vec<UserView>),
    /// API tokens.
    ApiTokens(Vec<ApiTokenView>),
    /// A new API token and its secret.
    NewToken(NewTokenView),
    /// Audit entries.
    Audit(Vec<AuditView>),
    /// Policy decisions.
    Decisions(Vec<DecisionView>),
    /// The admin endpoint's certificate.
    Certificate(CertificateView),
    /// This host's firmware slots and update state.
    Firmware(Box<FirmwareView>),
    /// A reboot of this host, accepted.
    HostReboot(HostRebootView),
    /// This host's site settings.
    HostSettings(HostSettingsView),
    /// A rolling update of the cluster.
    ClusterUpdate(Box<RolloutView>),
}

impl Answer {
    /// The JSON body the API sends: the view itself (`null` for
    /// [`Answer::Empty`]), without the tag the peer protocol carries.
    pub fn to_json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::to_value(ApiBody(self))
    }

    /// [`Answer::to_json`] as the bytes of the body, written straight from
    /// the view (no [`serde_json::Value`] in between).
    pub fn to_json_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(&ApiBody(self))
    }
}

/// An [`Answer`] serialized as the API sends it: the view alone.
struct ApiBody<'a>(&'a Answer);

impl Serialize for ApiBody<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Answer::Empty => s.serialize_unit(),
            Answer::Host(v) => v.serialize(s),
            Answer::Hosts(v) => v.serialize(s),
            Answer::Vm(v) => v.serialize(s),
            Answer::Vms(v) => v.serialize(s),
            Answer::Pool(v) => v.serialize(s),
            Answer::Pools(v) => v.serialize(s),
            Answer::Volume(v) => v.serialize(s),
            Answer::Volumes(v) => v.serialize(s),
            Answer::Snapshot(v) => v.serialize(s),
            Answer::Snapshots(v) => v.serialize(s),
            Answer::Image(v) => v.serialize(s),
            Answer::Images(v) => v.serialize(s),
            Answer::Vswitch(v) => v.serialize(s),
            Answer::Vswitches(v) => v.serialize(s),
            Answer::Job(v) => v.serialize(s),
            Answer::Jobs(v) => v.serialize(s),
            Answer::Plugin(v) => v.serialize(s),
            Answer::Plugins(v) => v.serialize(s),
            Answer::PluginReset(v) => v.serialize(s),
            Answer::Events(v) => v.serialize(s),
            Answer::Cluster(v) => v.serialize(s),
            Answer::JoinToken(v) => v.serialize(s),
            Answer::Session(v) => v.serialize(s),
            Answer::Caller(v) => v.serialize(s),
            Answer::User(v) => v.serialize(s),
            Answer::Users(v) => v.serialize(s),
            Answer::ApiTokens(v) => v.serialize(s),
            Answer::NewToken(v) => v.serialize(s),
            Answer::Audit(v) => v.serialize(s),
            Answer::Decisions(v) => v.serialize(s),
            Answer::Certificate(v) => v.serialize(s),
            Answer::Firmware(v) => v.serialize(s),
            Answer::HostReboot(v) => v.serialize(s),
            Answer::HostSettings(v) => v.serialize(s),
            Answer::ClusterUpdate(v) => v.serialize(s),
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
    SessionView => Session;
    CallerView => Caller;
    UserView => User;
    Vec<UserView> => Users;
    Vec<ApiTokenView> => ApiTokens;
    NewTokenView => NewToken;
    Vec<AuditView> => Audit;
    Vec<DecisionView> => Decisions;
    CertificateView => Certificate;
    FirmwareView => Firmware(Box::new);
    HostRebootView => HostReboot;
    HostSettingsView => HostSettings;
    RolloutView => ClusterUpdate(Box::new);
}
