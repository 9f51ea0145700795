//! The job answer (`Job` schema).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// State of a job (also the state the core records).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Not started yet.
    Queued,
    /// Running.
    Running,
    /// Done.
    Succeeded,
    /// Failed (see `error`).
    Failed,
    /// Cancelled.
    Cancelled,
}

impl JobState {
    /// Whether the job ended.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }

    /// The API name, e.g. `succeeded`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }
}

/// A long operation (`GET /api/v1/jobs/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "Job", deny_unknown_fields)]
pub struct JobView {
    /// Job id.
    pub id: String,
    /// `install`, `image-import`, `image-upload`, `volume-import`,
    /// `migrate`, `evacuate`, `firmware-install`.
    pub kind: String,
    /// State.
    pub state: JobState,
    /// 0 to 1.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub progress: f64,
    /// Why it failed.
    pub error: Option<String>,
    /// RFC 3339.
    #[schemars(extend("format" = "date-time"))]
    pub created_at: String,
    /// What the job works on, e.g. vm/web1, image/debian.
    pub target: Option<String>,
    /// The current step.
    pub message: Option<String>,
    /// RFC 3339, null while not finished.
    #[schemars(extend("format" = "date-time"))]
    pub finished_at: Option<String>,
}
