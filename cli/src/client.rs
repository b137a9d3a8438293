//! The connection to the admin API: endpoint, bearer token, and errors
//! turned into one clear line.

use std::fmt;
use std::time::Duration;

use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use webhook_proto::v1::deliveries_client::DeliveriesClient;
use webhook_proto::v1::logs_client::LogsClient;
use webhook_proto::v1::sources_client::SourcesClient;
use webhook_proto::v1::targets_client::TargetsClient;

/// Exit code for bad usage or configuration (sysexits EX_USAGE).
pub const EXIT_USAGE: u8 = 64;
/// Exit code when the server cannot be reached (sysexits EX_UNAVAILABLE).
pub const EXIT_UNAVAILABLE: u8 = 69;

/// A failure to report: one line, and the exit code.
#[derive(Debug)]
pub struct CliError {
    pub message: String,
    pub code: u8,
}

impl CliError {
    /// A failure with exit code 1.
    pub fn new(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            code: 1,
        }
    }

    /// A usage or configuration failure (exit code 64).
    pub fn usage(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            code: EXIT_USAGE,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<tonic::Status> for CliError {
    fn from(status: tonic::Status) -> Self {
        let what = match status.code() {
            tonic::Code::InvalidArgument => "invalid argument",
            tonic::Code::NotFound => "not found",
            tonic::Code::AlreadyExists => "already exists",
            tonic::Code::Unauthenticated => "not authorized",
            tonic::Code::PermissionDenied => "permission denied",
            tonic::Code::Unavailable => "server unavailable",
            tonic::Code::DeadlineExceeded => "timed out",
            _ => "server error",
        };
        let code = match status.code() {
            tonic::Code::InvalidArgument => EXIT_USAGE,
            tonic::Code::Unavailable => EXIT_UNAVAILABLE,
            _ => 1,
        };
        let mut message = format!("{what}: {}", status.message());
        if status.code() == tonic::Code::InvalidArgument
            && let Some(flag) = flag_of(status.message())
        {
            message.push_str(&format!(" (flag {flag})"));
        }
        CliError { message, code }
    }
}

/// The CLI flag for an API field named at the start of an error message
/// (`retry_interval: ...` is `--retry-interval`).
fn flag_of(message: &str) -> Option<String> {
    let (field, _) = message.split_once(": ")?;
    let flag = match field {
        "request_id" => "--source-id".to_owned(),
        "allow_plain_http" => "--no-ssl".to_owned(),
        "source_ids" => "--source".to_owned(),
        "limit" | "backlog" => "-n".to_owned(),
        f if !f.is_empty()
            && f.bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit()) =>
        {
            format!("--{}", f.replace('_', "-"))
        }
        _ => return None,
    };
    Some(flag)
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::new(e.to_string())
    }
}

/// Adds `authorization: Bearer <SECURE_KEY>` to every call.
#[derive(Clone)]
pub struct Bearer(AsciiMetadataValue);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

type Authed = InterceptedService<Channel, Bearer>;

/// Clients of every admin service over one connection.
pub struct Admin {
    channel: Channel,
    bearer: Bearer,
}

impl Admin {
    /// Connects to `server` with the token in SECURE_KEY.
    ///
    /// # Errors
    /// SECURE_KEY is missing, or the server cannot be reached.
    pub async fn connect(server: &str) -> Result<Self, CliError> {
        let key = std::env::var("SECURE_KEY").unwrap_or_default();
        if key.is_empty() {
            return Err(CliError::usage(
                "SECURE_KEY is not set: put it in .env in this directory or in the environment",
            ));
        }
        let token: AsciiMetadataValue =
            MetadataValue::try_from(format!("Bearer {key}")).map_err(|_| {
                CliError::usage("SECURE_KEY contains characters that cannot be sent in a header")
            })?;
        let endpoint = Endpoint::from_shared(server.to_owned())
            .map_err(|e| CliError::usage(format!("--server {server:?} is not a valid URL: {e}")))?
            .connect_timeout(Duration::from_secs(5));
        let channel = endpoint.connect().await.map_err(|e| {
            let cause = std::error::Error::source(&e)
                .map(|c| c.to_string())
                .unwrap_or_else(|| e.to_string());
            CliError {
                message: format!(
                    "cannot reach webhook-server at {server}: {cause} (is it running? start it with `webhook-cli run api`)"
                ),
                code: EXIT_UNAVAILABLE,
            }
        })?;
        Ok(Admin {
            channel,
            bearer: Bearer(token),
        })
    }

    pub fn sources(&self) -> SourcesClient<Authed> {
        SourcesClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    pub fn targets(&self) -> TargetsClient<Authed> {
        TargetsClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    pub fn logs(&self) -> LogsClient<Authed> {
        LogsClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    pub fn deliveries(&self) -> DeliveriesClient<Authed> {
        DeliveriesClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }
}
