//! The messages a client exchanges with frps, serialised as frp's Go structs are.
//!
//! Field order follows the Go structs, `omitempty` fields are skipped when empty, and
//! `Login.client_spec` is always present (Go never omits struct-typed fields). Unknown fields in
//! server messages are ignored, as Go's decoder does, so newer servers stay readable.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::frame::{self, Frame, FrameError, MsgType};

fn is_false(b: &bool) -> bool {
    !*b
}
fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}
fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}
fn is_zero_u16(n: &u16) -> bool {
    *n == 0
}

/// `Login.client_spec`; normal clients send `{}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientSpec {
    /// Only frps' internal ssh-tunnel clients set this.
    #[serde(rename = "type", default, skip_serializing_if = "String::is_empty")]
    pub ty: String,
    /// Only frps' internal ssh-tunnel clients set this.
    #[serde(default, skip_serializing_if = "is_false")]
    pub always_auth_pass: bool,
}

/// First message of the control connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Login {
    /// Client version; frps only logs it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// Client host name (not sent by frpc 0.52–0.66).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hostname: String,
    /// Go GOOS, e.g. `linux`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub os: String,
    /// Go GOARCH, e.g. `amd64`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub arch: String,
    /// User name, also the proxy-name prefix.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// `md5(token ‖ timestamp)`, see [`crate::auth::privilege_key`].
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub privilege_key: String,
    /// Unix seconds used in `privilege_key`.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub timestamp: i64,
    /// Empty on first login, the previous run id on re-login.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub run_id: String,
    /// 0.67+: stable client identity.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_id: String,
    /// Metadata for server plugins.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metas: BTreeMap<String, String>,
    /// Always present, `{}` for normal clients.
    #[serde(default)]
    pub client_spec: ClientSpec,
    /// Work connections frps should request up front.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub pool_count: u32,
}

/// Answer to [`Login`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginResp {
    /// frps version.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// Session id (16 hex characters) on success.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub run_id: String,
    /// Non-empty on failure.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// Registers a proxy. Only the fields burrow's tunnels use are modelled; the rest of frp's
/// struct (groups, bandwidth limits, visitors) is for proxy types burrow does not serve.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewProxy {
    /// Wire name (`user.name` when a user is set).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub proxy_name: String,
    /// `http`, `tcp`, …
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub proxy_type: String,
    /// Per-proxy AES-CFB on work connections.
    #[serde(default, skip_serializing_if = "is_false")]
    pub use_encryption: bool,
    /// Per-proxy snappy framing on work connections.
    #[serde(default, skip_serializing_if = "is_false")]
    pub use_compression: bool,
    /// Plugin metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metas: BTreeMap<String, String>,
    /// tcp: public port; 0 lets frps choose.
    #[serde(default, skip_serializing_if = "is_zero_u16")]
    pub remote_port: u16,
    /// http: host names routed to this proxy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom_domains: Vec<String>,
    /// http: `<subdomain>.<subDomainHost>`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subdomain: String,
    /// http: path prefixes routed to this proxy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locations: Vec<String>,
    /// http: basic auth enforced by frps.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub http_user: String,
    /// http: basic auth enforced by frps.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub http_pwd: String,
    /// http: `Host` header frps sends to the client.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host_header_rewrite: String,
    /// http: request headers set by frps.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// http: response headers set by frps (0.58+).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub response_headers: BTreeMap<String, String>,
}

/// Answer to [`NewProxy`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewProxyResp {
    /// Wire name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub proxy_name: String,
    /// tcp: `":<port>"`; http: comma-joined `host[:port]` entries.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub remote_addr: String,
    /// Non-empty on failure.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// Unregisters a proxy; frps does not answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseProxy {
    /// Wire name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub proxy_name: String,
}

/// First message of a work connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewWorkConn {
    /// The control session's run id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub run_id: String,
    /// Only with frps `auth.additionalScopes = ["NewWorkConns"]`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub privilege_key: String,
    /// Only with frps `auth.additionalScopes = ["NewWorkConns"]`.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub timestamp: i64,
}

/// frps asks for one more work connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReqWorkConn {}

/// A user connection is attached to this work connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartWorkConn {
    /// Wire name of the proxy the user connected to.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub proxy_name: String,
    /// The user's address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub src_addr: String,
    /// The user's address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub dst_addr: String,
    /// The user's port.
    #[serde(default, skip_serializing_if = "is_zero_u16")]
    pub src_port: u16,
    /// frps' local port of the user connection.
    #[serde(default, skip_serializing_if = "is_zero_u16")]
    pub dst_port: u16,
    /// Non-empty on failure (e.g. work-connection auth).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// Heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    /// Only with frps `auth.additionalScopes = ["HeartBeats"]`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub privilege_key: String,
    /// Only with frps `auth.additionalScopes = ["HeartBeats"]`.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub timestamp: i64,
}

/// Heartbeat answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    /// Non-empty when frps refused the heartbeat.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// A message a client sends or receives.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Message {
    Login(Login),
    LoginResp(LoginResp),
    NewProxy(NewProxy),
    NewProxyResp(NewProxyResp),
    CloseProxy(CloseProxy),
    NewWorkConn(NewWorkConn),
    ReqWorkConn(ReqWorkConn),
    StartWorkConn(StartWorkConn),
    Ping(Ping),
    Pong(Pong),
}

/// Why a frame is not a message this client understands.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// The frame itself is invalid.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A wire v2 frame, hello or AEAD record is invalid.
    #[error(transparent)]
    Wire(#[from] crate::error::WireError),
    /// A valid frp message this client does not take part in (visitors, UDP, xtcp).
    #[error("unsupported frp message {0}")]
    Unsupported(MsgType),
    /// The body is not a JSON object.
    #[error("malformed {0} body: not a JSON object")]
    NotObject(MsgType),
    /// The body is not the JSON the type calls for.
    #[error("malformed {ty} body: {source}")]
    Json {
        /// The frame's type.
        ty: MsgType,
        /// What serde_json said.
        #[source]
        source: serde_json::Error,
    },
}

impl Message {
    /// The frame type of this message.
    pub fn msg_type(&self) -> MsgType {
        match self {
            Message::Login(_) => MsgType::Login,
            Message::LoginResp(_) => MsgType::LoginResp,
            Message::NewProxy(_) => MsgType::NewProxy,
            Message::NewProxyResp(_) => MsgType::NewProxyResp,
            Message::CloseProxy(_) => MsgType::CloseProxy,
            Message::NewWorkConn(_) => MsgType::NewWorkConn,
            Message::ReqWorkConn(_) => MsgType::ReqWorkConn,
            Message::StartWorkConn(_) => MsgType::StartWorkConn,
            Message::Ping(_) => MsgType::Ping,
            Message::Pong(_) => MsgType::Pong,
        }
    }

    /// The JSON body, exactly as frp's Go encoder would write it (modulo Go's `\u003c` escaping
    /// of `<`, `>` and `&`, which readers treat alike).
    pub fn body(&self) -> Vec<u8> {
        let r = match self {
            Message::Login(m) => serde_json::to_vec(m),
            Message::LoginResp(m) => serde_json::to_vec(m),
            Message::NewProxy(m) => serde_json::to_vec(m),
            Message::NewProxyResp(m) => serde_json::to_vec(m),
            Message::CloseProxy(m) => serde_json::to_vec(m),
            Message::NewWorkConn(m) => serde_json::to_vec(m),
            Message::ReqWorkConn(m) => serde_json::to_vec(m),
            Message::StartWorkConn(m) => serde_json::to_vec(m),
            Message::Ping(m) => serde_json::to_vec(m),
            Message::Pong(m) => serde_json::to_vec(m),
        };
        // Plain structs of strings, integers and string maps cannot fail to serialise.
        r.expect("message serialisation is infallible")
    }

    /// Appends the framed message to `out`; fails when the body exceeds the frame cap.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), FrameError> {
        frame::encode(self.msg_type(), &self.body(), out)
    }

    /// The framed message as a new buffer.
    pub fn to_bytes(&self) -> Result<Vec<u8>, FrameError> {
        let mut out = Vec::new();
        self.encode(&mut out)?;
        Ok(out)
    }

    /// Parses a decoded frame.
    pub fn parse(frame: &Frame) -> Result<Message, MessageError> {
        Self::from_body(frame.ty, &frame.body)
    }

    /// Parses the JSON body of a message of type `ty` (v1 and v2 carry the same bodies).
    pub fn from_body(ty: MsgType, b: &[u8]) -> Result<Message, MessageError> {
        fn json<'a, T: Deserialize<'a>>(ty: MsgType, body: &'a [u8]) -> Result<T, MessageError> {
            // Go's reader takes an empty body as an empty object for these structs.
            let body: &[u8] = match body.iter().find(|b| !b.is_ascii_whitespace()) {
                None => b"{}",
                Some(b'{') => body,
                // serde would take an array as a struct's fields in order; Go's reader would not.
                Some(_) => return Err(MessageError::NotObject(ty)),
            };
            serde_json::from_slice(body).map_err(|source| MessageError::Json { ty, source })
        }
        Ok(match ty {
            MsgType::Login => Message::Login(json(ty, b)?),
            MsgType::LoginResp => Message::LoginResp(json(ty, b)?),
            MsgType::NewProxy => Message::NewProxy(json(ty, b)?),
            MsgType::NewProxyResp => Message::NewProxyResp(json(ty, b)?),
            MsgType::CloseProxy => Message::CloseProxy(json(ty, b)?),
            MsgType::NewWorkConn => Message::NewWorkConn(json(ty, b)?),
            MsgType::ReqWorkConn => Message::ReqWorkConn(json(ty, b)?),
            MsgType::StartWorkConn => Message::StartWorkConn(json(ty, b)?),
            MsgType::Ping => Message::Ping(json(ty, b)?),
            MsgType::Pong => Message::Pong(json(ty, b)?),
            other => return Err(MessageError::Unsupported(other)),
        })
    }

    /// Parses one whole framed message from the start of `bytes`; returns it and the bytes used,
    /// or `None` when `bytes` holds only part of a frame.
    pub fn decode(bytes: &[u8]) -> Result<Option<(Message, usize)>, MessageError> {
        let (used, frame) = frame::FrameDecoder::new().decode(bytes)?;
        match frame {
            Some(f) => Ok(Some((Message::parse(&f)?, used))),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(m: Message) {
        let bytes = m.to_bytes().unwrap();
        let (back, used) = Message::decode(&bytes).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(back, m);
    }

    #[test]
    fn golden_login_from_real_frpc() {
        // Captured from real frpc 0.65.0 (protocol notes §4): token "secret", no user.
        let login = Login {
            version: "0.65.0".into(),
            os: "linux".into(),
            arch: "amd64".into(),
            privilege_key: crate::auth::privilege_key("secret", 1795670360),
            timestamp: 1795670360,
            pool_count: 1,
            ..Default::default()
        };
        let bytes = Message::Login(login).to_bytes().unwrap();
        let json = br#"{"version":"0.65.0","os":"linux","arch":"amd64","privilege_key":"277fc2e21bb6fafe69511ad261707af4","timestamp":1795670360,"client_spec":{},"pool_count":1}"#;
        assert_eq!(&bytes[..9], &[0x6f, 0, 0, 0, 0, 0, 0, 0, 0x9a]);
        assert_eq!(&bytes[9..], &json[..]);
    }

    #[test]
    fn golden_new_proxy_field_order() {
        // Real frpc 0.65.0 NewProxy (protocol notes §4), less the fields burrow does not model.
        let np = NewProxy {
            proxy_name: "alice.web".into(),
            proxy_type: "http".into(),
            metas: [("k".to_string(), "v".to_string())].into(),
            custom_domains: vec!["web.local".into(), "web2.local".into()],
            locations: vec!["/".into(), "/api".into()],
            http_user: "u".into(),
            http_pwd: "p".into(),
            host_header_rewrite: "backend.internal".into(),
            headers: [("x-from-where".to_string(), "frp".to_string())].into(),
            response_headers: [("x-resp".to_string(), "yes".to_string())].into(),
            ..Default::default()
        };
        let body = Message::NewProxy(np).body();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"proxy_name":"alice.web","proxy_type":"http","metas":{"k":"v"},"custom_domains":["web.local","web2.local"],"locations":["/","/api"],"http_user":"u","http_pwd":"p","host_header_rewrite":"backend.internal","headers":{"x-from-where":"frp"},"response_headers":{"x-resp":"yes"}}"#
        );
        let tcp = NewProxy {
            proxy_name: "ssh".into(),
            proxy_type: "tcp".into(),
            use_encryption: true,
            use_compression: true,
            remote_port: 6000,
            ..Default::default()
        };
        assert_eq!(
            String::from_utf8(Message::NewProxy(tcp).body()).unwrap(),
            r#"{"proxy_name":"ssh","proxy_type":"tcp","use_encryption":true,"use_compression":true,"remote_port":6000}"#
        );
    }

    #[test]
    fn empty_messages_are_empty_objects() {
        for m in [Message::ReqWorkConn(ReqWorkConn {}), Message::Ping(Ping::default()), Message::Pong(Pong::default())]
        {
            assert_eq!(m.body(), b"{}");
            round_trip(m);
        }
    }

    #[test]
    fn every_message_round_trips() {
        round_trip(Message::Login(Login {
            version: "x".into(),
            hostname: "h".into(),
            os: "linux".into(),
            arch: "amd64".into(),
            user: "u".into(),
            privilege_key: "k".into(),
            timestamp: 7,
            run_id: "r".into(),
            client_id: "c".into(),
            metas: [("a".into(), "b".into())].into(),
            client_spec: ClientSpec { ty: "ssh-tunnel".into(), always_auth_pass: true },
            pool_count: 5,
        }));
        round_trip(Message::LoginResp(LoginResp {
            version: "0.65.0".into(),
            run_id: "89eac65ac89360e8".into(),
            error: String::new(),
        }));
        round_trip(Message::LoginResp(LoginResp {
            version: "0.65.0".into(),
            run_id: String::new(),
            error: "token in login doesn't match token from configuration".into(),
        }));
        round_trip(Message::NewProxy(NewProxy {
            proxy_name: "web".into(),
            proxy_type: "http".into(),
            subdomain: "app".into(),
            ..Default::default()
        }));
        round_trip(Message::NewProxyResp(NewProxyResp {
            proxy_name: "web".into(),
            remote_addr: "app.example.test:8080".into(),
            error: String::new(),
        }));
        round_trip(Message::CloseProxy(CloseProxy { proxy_name: "web".into() }));
        round_trip(Message::NewWorkConn(NewWorkConn { run_id: "r".into(), privilege_key: "k".into(), timestamp: 1 }));
        round_trip(Message::StartWorkConn(StartWorkConn {
            proxy_name: "t".into(),
            src_addr: "127.0.0.1".into(),
            dst_addr: "127.0.0.1".into(),
            src_port: 50000,
            dst_port: 6000,
            error: String::new(),
        }));
        round_trip(Message::Ping(Ping { privilege_key: "k".into(), timestamp: 9 }));
        round_trip(Message::Pong(Pong { error: "bad".into() }));
    }

    #[test]
    fn server_messages_as_frps_writes_them() {
        let real = br#"{"proxy_name":"web","src_addr":"127.0.0.1","src_port":52818}"#;
        let mut bytes = Vec::new();
        frame::encode(MsgType::StartWorkConn, real, &mut bytes).unwrap();
        let (m, _) = Message::decode(&bytes).unwrap().unwrap();
        assert_eq!(
            m,
            Message::StartWorkConn(StartWorkConn {
                proxy_name: "web".into(),
                src_addr: "127.0.0.1".into(),
                src_port: 52818,
                ..Default::default()
            })
        );
        // Unknown fields (newer servers) are ignored; Go's \u003c escapes are understood.
        let newer = br#"{"version":"0.70.1","run_id":"ab","future_field":[1,2],"error":"\u003cx\u003e"}"#;
        let mut bytes = Vec::new();
        frame::encode(MsgType::LoginResp, newer, &mut bytes).unwrap();
        let (m, _) = Message::decode(&bytes).unwrap().unwrap();
        assert_eq!(
            m,
            Message::LoginResp(LoginResp { version: "0.70.1".into(), run_id: "ab".into(), error: "<x>".into() })
        );
    }

    #[test]
    fn bad_bodies_and_types_are_errors_not_panics() {
        let cases: &[(MsgType, &[u8])] = &[
            (MsgType::LoginResp, b"{not json"),
            (MsgType::LoginResp, b"[]"),
            (MsgType::NewProxyResp, br#"{"proxy_name":5}"#),
            (MsgType::StartWorkConn, br#"{"src_port":70000}"#),
            (MsgType::StartWorkConn, br#"{"src_port":-1}"#),
            (MsgType::Pong, b"\xff\xfe"),
        ];
        for (ty, body) in cases {
            let mut bytes = Vec::new();
            frame::encode(*ty, body, &mut bytes).unwrap();
            assert!(
                matches!(Message::decode(&bytes), Err(MessageError::Json { .. } | MessageError::NotObject(_))),
                "{ty} {body:?}"
            );
        }
        let mut bytes = Vec::new();
        frame::encode(MsgType::UdpPacket, b"{}", &mut bytes).unwrap();
        assert!(matches!(Message::decode(&bytes), Err(MessageError::Unsupported(MsgType::UdpPacket))));
        assert!(matches!(
            Message::decode(b"Z\0\0\0\0\0\0\0\0"),
            Err(MessageError::Frame(FrameError::UnknownType(b'Z')))
        ));
    }

    #[test]
    fn oversized_new_proxy_is_refused_before_sending() {
        let np = NewProxy {
            proxy_name: "web".into(),
            custom_domains: (0..1000).map(|i| format!("host-{i}.example.com")).collect(),
            ..Default::default()
        };
        assert!(matches!(Message::NewProxy(np).to_bytes(), Err(FrameError::TooLong { .. })));
    }
}
