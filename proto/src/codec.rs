//! The admin API's codec: protobuf through prost, as `tonic_prost`'s, except
//! that a message that cannot be decoded (a string that is not UTF-8, a
//! truncated field) is the caller's mistake, so it is refused with
//! INVALID_ARGUMENT and a message that says what was wrong, instead of an
//! INTERNAL error that reads like a fault of the server.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::{Code, Status};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// A [`Codec`] for `application/grpc+proto`, used by every generated
/// service and client of `webhook.v1`.
#[derive(Debug, Clone)]
pub struct AdminCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for AdminCodec<T, U> {
    fn default() -> Self {
        AdminCodec(PhantomData)
    }
}

impl<T, U> Codec for AdminCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = AdminDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        AdminDecoder(ProstDecoder::new(BufferSettings::default()))
    }
}

/// Decodes with prost; a decoding failure becomes INVALID_ARGUMENT.
#[derive(Debug, Clone, Default)]
pub struct AdminDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for AdminDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|status| {
            if status.code() == Code::Internal {
                Status::invalid_argument(format!("malformed message: {}", status.message()))
            } else {
                status
            }
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
