//! The `[redact]` configuration: which built-in detectors run and with which action, the
//! field names whose values are always redacted, custom rules, and the keys.

use std::path::PathBuf;

use serde::Deserialize;

/// What happens to a value a rule matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Replace the match with `[REDACTED:<rule>]`.
    Mask,
    /// Replace the match with `tok_` and a shortened keyed HMAC-SHA256 of it: the same
    /// value gives the same token, and it cannot be reversed by guessing without the key.
    Hash,
    /// Remove the whole field.
    DropField,
    /// Drop the whole event (counted in `/metrics`).
    DropEvent,
    /// Replace the match with `enc:v1:<key-id>:<base64>` (AES-256-GCM); `spoor decrypt`
    /// turns it back with the key.
    Encrypt,
}

/// A built-in detector's setting: `off` or an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectorSetting {
    /// The detector does not run.
    Off,
    /// See [`Action::Mask`].
    Mask,
    /// See [`Action::Hash`].
    Hash,
    /// See [`Action::DropField`].
    DropField,
    /// See [`Action::DropEvent`].
    DropEvent,
    /// See [`Action::Encrypt`].
    Encrypt,
}

impl DetectorSetting {
    /// The action, or `None` when off.
    pub fn action(self) -> Option<Action> {
        match self {
            DetectorSetting::Off => None,
            DetectorSetting::Mask => Some(Action::Mask),
            DetectorSetting::Hash => Some(Action::Hash),
            DetectorSetting::DropField => Some(Action::DropField),
            DetectorSetting::DropEvent => Some(Action::DropEvent),
            DetectorSetting::Encrypt => Some(Action::Encrypt),
        }
    }
}

/// The built-in detectors: each `off` or an action. All `mask` by default except the IP
/// addresses, `off` by default.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Detectors {
    /// Payment card numbers: 13-19 digits, spaces or dashes allowed, Luhn-checked.
    pub card: DetectorSetting,
    /// Email addresses.
    pub email: DetectorSetting,
    /// AWS access key IDs (`AKIA…`, `ASIA…`).
    pub aws_access_key: DetectorSetting,
    /// AWS secret access keys next to a name saying so (`aws_secret_access_key=…`).
    pub aws_secret_key: DetectorSetting,
    /// GitHub tokens (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`, `github_pat_`).
    pub github_token: DetectorSetting,
    /// JSON Web Tokens (`eyJ….eyJ….…`).
    pub jwt: DetectorSetting,
    /// The credentials of `Authorization: Bearer …` / `Basic …`.
    pub authorization: DetectorSetting,
    /// PEM private key blocks.
    pub private_key: DetectorSetting,
    /// The password in `scheme://user:password@host`.
    pub url_password: DetectorSetting,
    /// US social security numbers (`123-45-6789`, invalid areas excluded).
    pub ssn: DetectorSetting,
    /// IPv4 and IPv6 addresses. Default `off`.
    pub ip: DetectorSetting,
}

impl Default for Detectors {
    fn default() -> Self {
        let m = DetectorSetting::Mask;
        Detectors {
            card: m,
            email: m,
            aws_access_key: m,
            aws_secret_key: m,
            github_token: m,
            jwt: m,
            authorization: m,
            private_key: m,
            url_password: m,
            ssn: m,
            ip: DetectorSetting::Off,
        }
    }
}

impl Detectors {
    /// The names of the built-in detectors, as in `[redact.detectors]`.
    pub const NAMES: [&'static str; 11] = [
        "card",
        "email",
        "aws_access_key",
        "aws_secret_key",
        "github_token",
        "jwt",
        "authorization",
        "private_key",
        "url_password",
        "ssn",
        "ip",
    ];

    /// The setting of the detector `name`, for changing it (`None` for an unknown name).
    pub fn get_mut(&mut self, name: &str) -> Option<&mut DetectorSetting> {
        Some(match name {
            "card" => &mut self.card,
            "email" => &mut self.email,
            "aws_access_key" => &mut self.aws_access_key,
            "aws_secret_key" => &mut self.aws_secret_key,
            "github_token" => &mut self.github_token,
            "jwt" => &mut self.jwt,
            "authorization" => &mut self.authorization,
            "private_key" => &mut self.private_key,
            "url_password" => &mut self.url_password,
            "ssn" => &mut self.ssn,
            "ip" => &mut self.ip,
            _ => return None,
        })
    }

    /// Applies a list such as `all=off,card,email=hash` in order: `NAME=SETTING` sets one
    /// detector (`off` or an action), a bare `NAME` means `NAME=mask`, and `all` stands
    /// for every detector. Detectors the list does not name keep their setting.
    pub fn apply_list(&mut self, list: &str) -> Result<(), String> {
        for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (name, setting) = item.split_once('=').unwrap_or((item, "mask"));
            let setting: DetectorSetting = parse_name(setting.trim()).map_err(|_| {
                format!("`{item}`: expected off, mask, hash, drop_field, drop_event or encrypt")
            })?;
            let name = name.trim();
            if name == "all" {
                for n in Self::NAMES {
                    if let Some(s) = self.get_mut(n) {
                        *s = setting;
                    }
                }
                continue;
            }
            let slot = self.get_mut(name).ok_or_else(|| {
                format!(
                    "`{name}` is not a detector (expected all or one of {})",
                    Self::NAMES.join(", ")
                )
            })?;
            *slot = setting;
        }
        Ok(())
    }
}

/// Parses a unit enum variant by its config name (`drop_field`; `drop-field` too).
pub(crate) fn parse_name<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    use serde::de::IntoDeserializer as _;
    let name = text.trim().replace('-', "_");
    let de: serde::de::value::StrDeserializer<'_, serde::de::value::Error> =
        name.as_str().into_deserializer();
    T::deserialize(de).map_err(|e| format!("`{text}`: {e}"))
}

/// A custom rule: a regular expression with a name. The first capture group that took
/// part in a match is what is redacted, or the whole match without groups.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomRule {
    /// Name used in masks, `redacted=` and metrics.
    pub name: String,
    /// The regular expression (Rust `regex` syntax).
    pub pattern: String,
    /// What to do with a match. Default `mask`.
    #[serde(default = "default_action")]
    pub action: Action,
}

fn default_action() -> Action {
    Action::Mask
}

/// Redaction settings (turned off only by `redaction = false` at the top level).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedactConfig {
    /// Built-in detectors.
    pub detectors: Detectors,
    /// Field names whose values are redacted whatever they hold, compared without case;
    /// a name also matches as a `_`/`-`/`.`-separated part of a key (`secret` matches
    /// `client_secret`). The same names followed by `=` or `:` are redacted in text.
    /// Default `password passwd secret token api_key authorization cookie set-cookie`.
    pub fields: Vec<String>,
    /// What happens to those fields' values. Default `mask`.
    pub field_action: Action,
    /// Custom rules.
    pub rules: Vec<CustomRule>,
    /// Key file (64 hex digits, mode 0600) for the `hash` action. Unset:
    /// `SPOOR_REDACT_HASH_KEY`, else `DATA_DIR/keys/redact-hash.key`, generated.
    pub hash_key_file: Option<PathBuf>,
    /// Key file for the `encrypt` action. Unset: `SPOOR_REDACT_ENCRYPT_KEY`, else
    /// `DATA_DIR/keys/redact-encrypt.key`, generated.
    pub encrypt_key_file: Option<PathBuf>,
}

impl Default for RedactConfig {
    fn default() -> Self {
        RedactConfig {
            detectors: Detectors::default(),
            fields: [
                "password",
                "passwd",
                "secret",
                "token",
                "api_key",
                "authorization",
                "cookie",
                "set-cookie",
            ]
            .map(String::from)
            .to_vec(),
            field_action: Action::Mask,
            rules: Vec::new(),
            hash_key_file: None,
            encrypt_key_file: None,
        }
    }
}
