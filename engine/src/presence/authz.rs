//! Who may watch whom: per-presentity rules for watchers by URI or domain
//! (RFC 3856 section 5.1 leaves policy to the server). The first matching
//! rule wins; without a match the default applies (allow, so that the
//! embedded configuration works with any client).

use serde::Deserialize;

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Active subscription with the real document.
    Allow,
    /// 403.
    Block,
    /// Active subscription with a neutral (closed) document: the watcher
    /// cannot tell it is blocked.
    PoliteBlock,
    /// Pending until allowed.
    Confirm,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The presentity's AOR (`sip:alice@example.com`) or `*`.
    pub presentity: String,
    /// A watcher AOR (`sip:bob@example.com`), a domain (`example.org`),
    /// or `*`.
    pub watcher: String,
    pub action: Action,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub rules: Vec<Rule>,
    pub default: Action,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { rules: Vec::new(), default: Action::Allow }
    }
}

impl Policy {
    /// The action for `watcher` (canonical AOR) watching `presentity`
    /// (canonical AOR).
    pub fn decide(&self, presentity: &[u8], watcher: &[u8]) -> Action {
        let domain = watcher.iter().position(|&b| b == b'@').map(|i| &watcher[i + 1..]).unwrap_or(b"");
        self.rules
            .iter()
            .find(|r| {
                (r.presentity == "*" || r.presentity.as_bytes().eq_ignore_ascii_case(presentity))
                    && (r.watcher == "*" || r.watcher.as_bytes().eq_ignore_ascii_case(watcher) || r.watcher.as_bytes().eq_ignore_ascii_case(domain))
            })
            .map_or(self.default, |r| r.action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_match_by_uri_or_domain_then_default() {
        let rule = |p: &str, w: &str, action| Rule { presentity: p.into(), watcher: w.into(), action };
        let policy = Policy {
            rules: vec![
                rule("sip:alice@example.com", "sip:eve@evil.example", Action::Block),
                rule("sip:alice@example.com", "partner.example", Action::PoliteBlock),
                rule("*", "sip:stranger@example.net", Action::Confirm),
            ],
            default: Action::Allow,
        };
        assert_eq!(policy.decide(b"sip:alice@example.com", b"sip:eve@evil.example"), Action::Block);
        assert_eq!(policy.decide(b"sip:alice@example.com", b"sip:joe@partner.example"), Action::PoliteBlock);
        assert_eq!(policy.decide(b"sip:bob@example.com", b"sip:joe@partner.example"), Action::Allow);
        assert_eq!(policy.decide(b"sip:bob@example.com", b"sip:stranger@example.net"), Action::Confirm);
        assert_eq!(policy.decide(b"sip:bob@example.com", b"sip:friend@example.com"), Action::Allow);
    }
}
