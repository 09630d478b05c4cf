//! Bearer tokens: the tokens file holds `<role> <name> <sha256 hex>` lines, never a token
//! in clear; a request's token is hashed and compared in constant time.

use std::fmt;
use std::path::Path;
use std::process::ExitCode;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a token may do (`contract.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Payment commands, dispute commands by parties; reads payments and disputes.
    Coordinator,
    /// Dispute administration and adjustments; reads payments, disputes and accounts.
    Admin,
    /// Every read, no command.
    Finance,
}

impl Role {
    /// Parses a role name.
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "coordinator" => Some(Role::Coordinator),
            "admin" => Some(Role::Admin),
            "finance" => Some(Role::Finance),
            _ => None,
        }
    }

    /// The role's name as written in the tokens file and in event metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Coordinator => "coordinator",
            Role::Admin => "admin",
            Role::Finance => "finance",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The caller a token identifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Its role.
    pub role: Role,
    /// The name the token was issued to.
    pub name: String,
}

#[derive(Debug, Clone)]
struct Entry {
    hash: [u8; 32],
    principal: Principal,
}

/// The known tokens, by hash.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    entries: Vec<Entry>,
}

/// A tokens file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// The file cannot be read.
    #[error("cannot read tokens file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not `<role> <name> <sha256 hex>`.
    #[error("tokens file line {line}: {reason}")]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

impl Tokens {
    /// Reads a tokens file.
    ///
    /// # Errors
    /// [`TokensError`] naming the line at fault.
    pub fn load(path: &Path) -> Result<Tokens, TokensError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Tokens::parse(&text)
    }

    /// Parses the tokens file's text.
    ///
    /// # Errors
    /// [`TokensError::Malformed`].
    pub fn parse(text: &str) -> Result<Tokens, TokensError> {
        let mut entries = Vec::new();
        let mut lines: Vec<(usize, [u8; 32])> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let malformed = |reason: &str| TokensError::Malformed {
                line: i + 1,
                reason: reason.to_owned(),
            };
            let parts: Vec<&str> = line.split_whitespace().collect();
            let [role, name, hash] = parts.as_slice() else {
                return Err(malformed("expected `<role> <name> <sha256 hex>`"));
            };
            let role = Role::parse(role)
                .ok_or_else(|| malformed("role must be coordinator, admin or finance"))?;
            let bytes = hex::decode(hash).map_err(|_| malformed("the hash is not hex"))?;
            let hash: [u8; 32] = bytes
                .try_into()
                .map_err(|_| malformed("the hash must be 64 hex digits (sha256)"))?;
            // One token, one role: a hash listed twice would take its last line's role,
            // silently (a copied line could turn a finance token into an admin one).
            if let Some((first, _)) = lines.iter().find(|(_, h)| *h == hash) {
                return Err(malformed(&format!(
                    "this hash is already on line {first}: one token has one role and name"
                )));
            }
            // Idempotency keys are kept per name: two tokens of one name (a rotation)
            // share them, so one name has one role, or a key used by one role could be
            // replayed to the other.
            if let Some(e) = entries
                .iter()
                .find(|e: &&Entry| e.principal.name == *name && e.principal.role != role)
            {
                return Err(malformed(&format!(
                    "the name {name} already has the role {}: one name, one role (idempotency \
                     keys are kept per name)",
                    e.principal.role.as_str()
                )));
            }
            lines.push((i + 1, hash));
            entries.push(Entry {
                hash,
                principal: Principal {
                    role,
                    name: (*name).to_owned(),
                },
            });
        }
        Ok(Tokens { entries })
    }

    /// Adds a token in clear (tests and the demo).
    pub fn insert(&mut self, token: &str, role: Role, name: &str) {
        self.entries.push(Entry {
            hash: hash_token(token),
            principal: Principal {
                role,
                name: name.to_owned(),
            },
        });
    }

    /// The principal of a presented token, comparing every entry in constant time.
    pub fn authenticate(&self, token: &str) -> Option<Principal> {
        let presented = hash_token(token);
        let mut found = None;
        for e in &self.entries {
            if bool::from(e.hash.ct_eq(&presented)) {
                found = Some(e.principal.clone());
            }
        }
        found
    }
}

/// SHA-256 of a token.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A new random token (256 bits from the OS's generator), hex encoded.
pub fn new_token() -> String {
    let a = uuid::Uuid::new_v4();
    let b = uuid::Uuid::new_v4();
    let c = uuid::Uuid::new_v4();
    // v4 UUIDs carry 122 random bits each; three give more than 256.
    let mut bytes = Vec::with_capacity(48);
    bytes.extend_from_slice(a.as_bytes());
    bytes.extend_from_slice(b.as_bytes());
    bytes.extend_from_slice(c.as_bytes());
    format!("el_{}", hex::encode(Sha256::digest(&bytes)))
}

/// `escrow-ledger token`: prints a token and its tokens-file line, or appends the line to
/// a tokens file and prints the token alone.
///
/// # Errors
/// An unknown role, a name with blanks, or a tokens file that cannot be read, is not a
/// valid tokens file, or would not be one with the new line (the name holds another role).
pub fn print_new_token(
    role: &str,
    name: &str,
    tokens_file: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let role = Role::parse(role)
        .ok_or_else(|| anyhow::anyhow!("--role must be coordinator, admin or finance"))?;
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '#') {
        anyhow::bail!("--name must be non-empty, without blanks or '#'");
    }
    let token = new_token();
    let line = format!(
        "{} {name} {}",
        role.as_str(),
        hex::encode(hash_token(&token))
    );
    match tokens_file {
        None => {
            println!("token: {token}");
            println!("tokens file line: {line}");
        }
        Some(path) => {
            append_line(path, &line)?;
            println!("token: {token}");
            println!(
                "added to {}: {role} {name}",
                path.display(),
                role = role.as_str()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Appends a token's line to a tokens file, once the file with the line still parses.
fn append_line(path: &Path, line: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(TokensError::Read {
                path: path.display().to_string(),
                source,
            }
            .into())
        }
    };
    let separator = if existing.is_empty() || existing.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    let text = format!("{separator}{line}\n");
    Tokens::parse(&format!("{existing}{text}"))
        .map_err(|e| anyhow::anyhow!("{}: nothing added: {e}", path.display()))?;
    let mut options = std::fs::OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot open tokens file {}: {e}", path.display()))?;
    file.write_all(text.as_bytes())
        .map_err(|e| anyhow::anyhow!("cannot write tokens file {}: {e}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_name_has_one_role_and_may_have_two_tokens() {
        let h = |t: &str| hex::encode(hash_token(t));
        let rotation = format!("coordinator shop {}\ncoordinator shop {}\n", h("a"), h("b"));
        let tokens = Tokens::parse(&rotation).unwrap();
        assert_eq!(
            tokens.authenticate("b").map(|p| p.name),
            Some("shop".into())
        );
        let two_roles = format!("coordinator shop {}\nadmin shop {}\n", h("a"), h("b"));
        let err = Tokens::parse(&two_roles).unwrap_err().to_string();
        assert!(err.contains("one name, one role"), "{err}");
    }

    #[test]
    fn a_token_authenticates_by_its_hash_only() {
        let token = new_token();
        let file = format!(
            "# comment\ncoordinator checkout {}\n",
            hex::encode(hash_token(&token))
        );
        let tokens = Tokens::parse(&file).unwrap();
        assert_eq!(
            tokens.authenticate(&token),
            Some(Principal {
                role: Role::Coordinator,
                name: "checkout".into()
            })
        );
        assert_eq!(tokens.authenticate("el_wrong"), None);
        assert!(!file.contains(&token));
    }

    #[test]
    fn a_hash_listed_twice_is_refused_with_both_lines() {
        let hash = hex::encode(hash_token("t"));
        let err = Tokens::parse(&format!("finance fin {hash}\n# note\nadmin boss {hash}\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3") && err.contains("line 1"), "{err}");
    }

    #[test]
    fn malformed_lines_are_named() {
        let err = Tokens::parse("coordinator x\n").unwrap_err();
        assert!(matches!(err, TokensError::Malformed { line: 1, .. }));
        assert!(Tokens::parse("root x 00").is_err());
    }
}
