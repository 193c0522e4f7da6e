//! PIDF (RFC 3863) with the data model of RFC 4479: validation of published
//! documents and composition of one document per presentity.
//!
//! Parsing uses roxmltree: namespace-aware, no DTD (so no entity
//! expansion), a node limit, and a depth limit checked here. Composition
//! copies each top-level element of each source document verbatim (RPID
//! and unknown extensions stay intact), adding to the copy the namespace
//! declarations it had in scope, so it means the same outside its
//! original document. Elements with the same kind and id are merged newest
//! first: the newest publication's version wins.

use std::fmt::Write as _;

pub const NS_PIDF: &str = "urn:ietf:params:xml:ns:pidf";
pub const NS_DM: &str = "urn:ietf:params:xml:ns:pidf:data-model";
/// Largest PIDF document accepted in a PUBLISH.
pub const MAX_PIDF: usize = 64 * 1024;
const MAX_DEPTH: usize = 32;
const MAX_NODES: u32 = 20_000;

/// A top-level element of a valid document, by kind and id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    /// "tuple", "person", "device", or "other" (notes, extensions).
    pub kind: &'static str,
    /// The `id` attribute (tuples, persons and devices must have one).
    pub id: Option<String>,
    /// The element's text with its in-scope namespaces declared on it.
    pub xml: String,
}

/// A validated PIDF document, reduced to what composition needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pidf {
    pub entity: String,
    pub elements: Vec<Element>,
}

/// Parses and validates a PIDF document; the error says what is wrong.
pub fn parse(body: &[u8]) -> Result<Pidf, String> {
    if body.len() > MAX_PIDF {
        return Err(format!("PIDF larger than {MAX_PIDF} bytes"));
    }
    let text = std::str::from_utf8(body).map_err(|_| "PIDF is not UTF-8".to_string())?;
    let opts = roxmltree::ParsingOptions { allow_dtd: false, nodes_limit: MAX_NODES };
    let doc = roxmltree::Document::parse_with_options(text, opts).map_err(|e| format!("PIDF XML: {e}"))?;
    let root = doc.root_element();
    if !root.has_tag_name((NS_PIDF, "presence")) {
        return Err("root is not presence in urn:ietf:params:xml:ns:pidf".into());
    }
    let entity = root.attribute("entity").ok_or("presence without entity")?.to_string();
    if depth(root) > MAX_DEPTH {
        return Err(format!("PIDF nested deeper than {MAX_DEPTH}"));
    }
    let mut elements = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for child in root.children().filter(|n| n.is_element()) {
        let kind = match (child.tag_name().namespace(), child.tag_name().name()) {
            (Some(NS_PIDF), "tuple") => "tuple",
            (Some(NS_DM), "person") => "person",
            (Some(NS_DM), "device") => "device",
            _ => "other",
        };
        let id = child.attribute("id").map(str::to_string);
        if kind != "other" {
            let Some(id) = &id else { return Err(format!("{kind} without id")) };
            if !ids.insert((kind, id.clone())) {
                return Err(format!("duplicate {kind} id {id:?}"));
            }
        }
        if kind == "tuple" {
            let status = child.children().find(|n| n.has_tag_name((NS_PIDF, "status"))).ok_or("tuple without status")?;
            if let Some(basic) = status.children().find(|n| n.has_tag_name((NS_PIDF, "basic"))) {
                if !matches!(basic.text().map(str::trim), Some("open") | Some("closed")) {
                    return Err("basic status must be open or closed".into());
                }
            }
        }
        elements.push(Element { kind, id, xml: standalone(text, child) });
    }
    Ok(Pidf { entity, elements })
}

fn depth(n: roxmltree::Node<'_, '_>) -> usize {
    1 + n.children().filter(|c| c.is_element()).map(depth).max().unwrap_or(0)
}

/// The element's source text with every in-scope namespace it does not
/// declare itself added to its start tag.
fn standalone(text: &str, node: roxmltree::Node<'_, '_>) -> String {
    let src = &text[node.range()];
    let name_end = src[1..].find(|c: char| c.is_whitespace() || c == '/' || c == '>').map_or(src.len(), |i| i + 1);
    let start_tag = &src[..start_tag_end(src)];
    let mut decls = String::new();
    for ns in node.namespaces() {
        let attr = match ns.name() {
            Some(p) => format!("xmlns:{p}="),
            None => "xmlns=".to_string(),
        };
        if start_tag.contains(&attr) {
            continue;
        }
        let _ = write!(decls, " {attr}\"{}\"", escape_attr(ns.uri()));
    }
    let mut out = String::with_capacity(src.len() + decls.len());
    out.push_str(&src[..name_end]);
    out.push_str(&decls);
    out.push_str(&src[name_end..]);
    out
}

/// End of the start tag (index after its `>`), skipping quoted values.
fn start_tag_end(src: &str) -> usize {
    let mut quote = None;
    for (i, c) in src.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '>') => return i + 1,
            _ => {}
        }
    }
    src.len()
}

fn escape_attr(s: &str) -> String {
    s.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;")
}

fn escape_text(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Composes one document for `entity` from its publications, newest last,
/// and its registered contacts. Registration tuples (open, one per
/// contact) appear only when nothing is published; with neither, the
/// document holds one closed tuple.
pub fn compose(entity: &str, publications: &[&Pidf], contacts: &[&str]) -> String {
    let mut out = String::with_capacity(512);
    let _ = write!(
        out,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<presence xmlns=\"{NS_PIDF}\" xmlns:dm=\"{NS_DM}\" entity=\"{}\">\n",
        escape_attr(entity)
    );
    if publications.is_empty() {
        if contacts.is_empty() {
            out.push_str("<tuple id=\"reg\"><status><basic>closed</basic></status></tuple>\n");
        }
        for (i, c) in contacts.iter().enumerate() {
            let _ = writeln!(out, "<tuple id=\"reg{i}\"><status><basic>open</basic></status><contact>{}</contact></tuple>", escape_text(c));
        }
    } else {
        // Each element at its place in the publication order (oldest
        // first), unless a newer publication has the same kind and id.
        let superseded = |i: usize, e: &Element| {
            e.id.as_ref().is_some_and(|id| publications[i + 1..].iter().any(|p| p.elements.iter().any(|x| x.kind == e.kind && x.id.as_ref() == Some(id))))
        };
        let chosen: Vec<&Element> =
            publications.iter().enumerate().flat_map(|(i, p)| p.elements.iter().filter(move |e| !superseded(i, e))).collect();
        // Tuples first, as RFC 3863's schema orders them, then the rest.
        for e in chosen.iter().filter(|e| e.kind == "tuple").chain(chosen.iter().filter(|e| e.kind != "tuple")) {
            out.push_str(&e.xml);
            out.push('\n');
        }
    }
    out.push_str("</presence>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
    xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="pres:alice@example.com">
  <tuple id="t1"><status><basic>open</basic></status><contact>sip:alice@192.0.2.1</contact></tuple>
  <dm:person id="p1"><rpid:activities><rpid:busy/></rpid:activities></dm:person>
  <note xml:lang="en">at work</note>
</presence>"#;

    #[test]
    fn parses_and_keeps_extensions() {
        let p = parse(DOC.as_bytes()).unwrap();
        assert_eq!(p.entity, "pres:alice@example.com");
        let kinds: Vec<_> = p.elements.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["tuple", "person", "other"]);
        // The person carries the rpid namespace with it.
        assert!(p.elements[1].xml.contains("xmlns:rpid=\"urn:ietf:params:xml:ns:pidf:rpid\""), "{}", p.elements[1].xml);
        assert!(p.elements[1].xml.contains("<rpid:busy/>"));
    }

    #[test]
    fn invalid_documents_say_why() {
        let cases = [
            (DOC.replace("entity=\"pres:alice@example.com\"", ""), "entity"),
            (DOC.replace("<tuple id=\"t1\">", "<tuple>"), "tuple without id"),
            (DOC.replace("<basic>open</basic>", "<basic>maybe</basic>"), "open or closed"),
            (DOC.replace("urn:ietf:params:xml:ns:pidf\" xmlns:dm", "urn:other\" xmlns:dm"), "root"),
            (DOC.replace("</presence>", ""), "XML"),
            (DOC.replace("<note xml:lang=\"en\">at work</note>", "<tuple id=\"t1\"><status/></tuple>"), "duplicate"),
            (format!("<!DOCTYPE x [<!ENTITY a \"b\">]>{DOC}"), "XML"),
        ];
        for (doc, why) in cases {
            let e = parse(doc.as_bytes()).unwrap_err();
            assert!(e.contains(why), "{why}: {e}");
        }
        let deep = format!(
            "<presence xmlns=\"{NS_PIDF}\" entity=\"x\">{}{}</presence>",
            "<e>".repeat(40),
            "</e>".repeat(40)
        );
        assert!(parse(deep.as_bytes()).unwrap_err().contains("deeper"));
    }

    #[test]
    fn composition_merges_newest_wins_and_reparses() {
        let old = parse(DOC.as_bytes()).unwrap();
        let newer = parse(
            DOC.replace("<basic>open</basic>", "<basic>closed</basic>")
                .replace("<rpid:busy/>", "<rpid:away/>")
                .replace("<note xml:lang=\"en\">at work</note>", "<tuple id=\"t2\"><status><basic>open</basic></status></tuple>")
                .as_bytes(),
        )
        .unwrap();
        let doc = compose("sip:alice@example.com", &[&old, &newer], &["sip:ignored@192.0.2.9"]);
        let again = parse(doc.as_bytes()).expect("the composed document is valid PIDF");
        let ids: Vec<_> = again.elements.iter().map(|e| (e.kind, e.id.clone())).collect();
        assert_eq!(ids, [("tuple", Some("t1".into())), ("tuple", Some("t2".into())), ("other", None), ("person", Some("p1".into()))]);
        assert!(doc.contains("<basic>closed</basic>") && !doc.contains("<basic>open</basic><contact>sip:alice"), "newest t1 wins");
        assert!(doc.contains("<rpid:away/>") && !doc.contains("<rpid:busy/>"), "newest person wins");
        assert!(doc.contains("at work"), "the older note is kept");
        assert!(!doc.contains("ignored"), "registration tuples only without publications");
    }

    #[test]
    fn registration_only_documents() {
        let open = compose("sip:bob@example.com", &[], &["sip:bob@192.0.2.1", "sip:bob@192.0.2.2"]);
        let p = parse(open.as_bytes()).unwrap();
        assert_eq!(p.elements.len(), 2);
        assert!(open.contains("<contact>sip:bob@192.0.2.2</contact>") && open.matches("<basic>open</basic>").count() == 2);
        let closed = compose("sip:bob@example.com", &[], &[]);
        assert!(parse(closed.as_bytes()).is_ok() && closed.contains("<basic>closed</basic>"));
    }
}
