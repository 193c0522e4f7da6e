//! `application/reginfo+xml` (RFC 3680 section 5.3), parsed with
//! roxmltree: it refuses DTDs and so entity expansion, and the document is
//! size-limited before parsing. Unknown elements and attributes are
//! ignored, as the schema's extension points require.

const NS: &str = "urn:ietf:params:xml:ns:reginfo";
/// Largest reginfo document accepted.
pub const MAX_REGINFO: usize = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegInfo {
    pub version: u32,
    /// `full` state replaces what is known; `partial` applies changes.
    pub full: bool,
    pub registrations: Vec<RegInfoRegistration>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegInfoRegistration {
    pub aor: String,
    /// init, active or terminated.
    pub state: String,
    pub contacts: Vec<RegInfoContact>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegInfoContact {
    pub uri: String,
    pub active: bool,
    /// registered, created, refreshed, shortened, expired, deactivated,
    /// probation, unregistered or rejected.
    pub event: String,
    pub expires: Option<u32>,
    /// An `<unknown-param name="events">` lists `presence`: the contact
    /// is a presence user agent (RFC 3840 feature tag carried through).
    pub pua: bool,
}

const EVENTS: &[&str] = &["registered", "created", "refreshed", "shortened", "expired", "deactivated", "probation", "unregistered", "rejected"];

/// Parses a reginfo document; the error says what is wrong.
pub fn parse(body: &[u8]) -> Result<RegInfo, String> {
    if body.len() > MAX_REGINFO {
        return Err(format!("reginfo larger than {MAX_REGINFO} bytes"));
    }
    let text = std::str::from_utf8(body).map_err(|_| "reginfo is not UTF-8".to_string())?;
    let opts = roxmltree::ParsingOptions { allow_dtd: false, nodes_limit: 10_000 };
    let doc = roxmltree::Document::parse_with_options(text, opts).map_err(|e| format!("reginfo XML: {e}"))?;
    let root = doc.root_element();
    if root.tag_name().name() != "reginfo" || root.tag_name().namespace() != Some(NS) {
        return Err("root is not reginfo in urn:ietf:params:xml:ns:reginfo".into());
    }
    let version = root.attribute("version").and_then(|v| v.parse().ok()).ok_or("reginfo without a valid version")?;
    let full = match root.attribute("state") {
        Some("full") => true,
        Some("partial") => false,
        _ => return Err("reginfo state must be full or partial".into()),
    };
    let mut registrations = Vec::new();
    for reg in root.children().filter(|n| n.has_tag_name((NS, "registration"))) {
        let aor = reg.attribute("aor").ok_or("registration without aor")?.to_string();
        let state = reg.attribute("state").ok_or("registration without state")?;
        if !matches!(state, "init" | "active" | "terminated") {
            return Err(format!("registration state {state:?}"));
        }
        let mut contacts = Vec::new();
        for c in reg.children().filter(|n| n.has_tag_name((NS, "contact"))) {
            let active = match c.attribute("state") {
                Some("active") => true,
                Some("terminated") => false,
                other => return Err(format!("contact state {other:?}")),
            };
            let event = c.attribute("event").ok_or("contact without event")?;
            if !EVENTS.contains(&event) {
                return Err(format!("contact event {event:?}"));
            }
            let expires = match c.attribute("expires") {
                Some(v) => Some(v.parse().map_err(|_| format!("contact expires {v:?}"))?),
                None => None,
            };
            let uri = c
                .children()
                .find(|n| n.has_tag_name((NS, "uri")))
                .and_then(|n| n.text())
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .ok_or("contact without uri")?;
            let pua = c
                .children()
                .filter(|n| n.has_tag_name((NS, "unknown-param")) && n.attribute("name").is_some_and(|a| a.eq_ignore_ascii_case("events")))
                .any(|n| super::events_include(n.text().unwrap_or("").trim().as_bytes(), b"presence"));
            contacts.push(RegInfoContact { uri, active, event: event.to_string(), expires, pua });
        }
        registrations.push(RegInfoRegistration { aor, state: state.to_string(), contacts });
    }
    Ok(RegInfo { version, full, registrations })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"<?xml version="1.0"?>
<reginfo xmlns="urn:ietf:params:xml:ns:reginfo" version="0" state="full">
  <registration aor="sip:joe@example.com" id="a7" state="active">
    <contact id="76" state="active" event="registered" expires="3600"><uri>sip:joe@pc887.example.com</uri><unknown-param name="events">"presence, reg"</unknown-param></contact>
    <contact id="77" state="terminated" event="expired"><uri>sip:joe@old.example.com</uri><x:ext xmlns:x="urn:x"/></contact>
  </registration>
</reginfo>"#;

    #[test]
    fn full_state() {
        let r = parse(FULL.as_bytes()).unwrap();
        assert_eq!(r.version, 0);
        assert!(r.full);
        assert_eq!(r.registrations[0].aor, "sip:joe@example.com");
        assert_eq!(r.registrations[0].contacts.len(), 2);
        assert_eq!(
            r.registrations[0].contacts[0],
            RegInfoContact { uri: "sip:joe@pc887.example.com".into(), active: true, event: "registered".into(), expires: Some(3600), pua: true }
        );
        assert!(!r.registrations[0].contacts[1].active);
    }

    #[test]
    fn hostile_and_broken_documents_are_refused() {
        let dtd =
            r#"<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa">]><reginfo xmlns="urn:ietf:params:xml:ns:reginfo" version="1" state="full">&a;</reginfo>"#;
        assert!(parse(dtd.as_bytes()).is_err());
        assert!(parse(b"<reginfo").is_err());
        assert!(parse(br#"<reginfo xmlns="urn:other" version="1" state="full"/>"#).is_err());
        assert!(parse(br#"<reginfo xmlns="urn:ietf:params:xml:ns:reginfo" state="full"/>"#).unwrap_err().contains("version"));
        assert!(parse(FULL.replace("event=\"registered\"", "event=\"bogus\"").as_bytes()).unwrap_err().contains("bogus"));
        assert!(parse(&vec![b' '; MAX_REGINFO + 1]).is_err());
    }
}
