//! Watcher information (RFC 3857 package `presence.winfo`, RFC 3858
//! format `application/watcherinfo+xml`): what a presentity learns about
//! who watches it.

use std::fmt::Write as _;

/// One watcher as the presentity sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatcherState {
    /// Stable for the life of the subscription.
    pub id: String,
    pub uri: Box<[u8]>,
    /// pending, active, waiting or terminated.
    pub status: &'static str,
    /// What moved it there: subscribe, approved, deactivated, rejected ...
    pub event: &'static str,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A watcherinfo document for `resource`: its full watcher list, or
/// (`full` false) the watchers that changed since the last one.
pub fn document(resource: &[u8], version: u32, full: bool, watchers: &[WatcherState]) -> Vec<u8> {
    let mut out = String::with_capacity(256 + 96 * watchers.len());
    let _ = write!(
        out,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<watcherinfo xmlns=\"urn:ietf:params:xml:ns:watcherinfo\" version=\"{version}\" state=\"{}\">\n\
<watcher-list resource=\"{}\" package=\"presence\">\n",
        if full { "full" } else { "partial" },
        escape(&String::from_utf8_lossy(resource))
    );
    for w in watchers {
        let _ = writeln!(
            out,
            "<watcher id=\"{}\" event=\"{}\" status=\"{}\">{}</watcher>",
            escape(&w.id),
            w.event,
            w.status,
            escape(&String::from_utf8_lossy(&w.uri))
        );
    }
    out.push_str("</watcher-list>\n</watcherinfo>\n");
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_well_formed_and_escaped() {
        let w = WatcherState { id: "0-1".into(), uri: (*b"sip:a&b@example.com").into(), status: "active", event: "subscribe" };
        let d = String::from_utf8(document(b"sip:alice@example.com", 3, false, &[w])).unwrap();
        let doc = roxmltree::Document::parse(&d).unwrap();
        let root = doc.root_element();
        assert_eq!(root.attribute("version"), Some("3"));
        assert_eq!(root.attribute("state"), Some("partial"));
        let watcher = root.descendants().find(|n| n.has_tag_name("watcher")).unwrap();
        assert_eq!(watcher.text(), Some("sip:a&b@example.com"));
        assert_eq!(watcher.attribute("status"), Some("active"));
    }
}
