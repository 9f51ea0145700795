//! The [`Core`] trait: the one place that acts. The HTTPS server (crate
//! `nasvisor-api`) parses requests into an [`Action`] and forwards them to an
//! implementation of it (crate `nasvisor-core`), which answers with a typed
//! [`Answer`]; the server turns it into the JSON body it sends.

use crate::action::Action;
use crate::body::ImageUpload;
use crate::error::CoreError;
use crate::view::Answer;

/// The core: the one place that acts. The API layer only parses requests into
/// an [`Action`] and forwards it here; it never touches QEMU, storage or the
/// network itself.
#[async_trait::async_trait]
pub trait Core: Send + Sync {
    /// Carries out one action and returns its typed answer: the view of the
    /// response schema of the action's route in `openapi.json`
    /// ([`Answer::Empty`] for a route without content). The server turns it
    /// into the JSON body ([`Answer::to_json`]).
    async fn handle(&self, action: Action) -> Result<Answer, CoreError>;

    /// The serial console of VM `id` (`GET /api/v1/vms/{id}/console`): first
    /// up to `tail` bytes of history, then, when `follow`, new output as it
    /// comes. The answer is streamed to the client until the stream ends or
    /// the client goes away (the stream is then dropped).
    async fn console(&self, id: String, follow: bool, tail: u64) -> Result<ByteStream, CoreError>;

    /// Imports an uploaded image (`POST /api/v1/images/{name}/upload`) and
    /// answers with the import Job ([`Answer::Job`]). `body` yields the request body as it arrives,
    /// never buffered whole by the API layer; it yields an `Err` when the
    /// client breaks off or the upload exceeds the server's limit, and the
    /// core must then discard what it wrote.
    async fn upload_image(
        &self,
        upload: ImageUpload,
        body: ByteStream,
    ) -> Result<Answer, CoreError>;
}

/// A stream of bytes: a console's output, or an upload's body.
pub type ByteStream = std::pin::Pin<
    Box<dyn futures_core::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send>,
>;
