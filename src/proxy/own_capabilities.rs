//! The bridge's own receiver capabilities (spec clause 7), derived from the
//! configuration once at start-up.

use crate::config::Config;
use crate::digest;
use crate::ischedule::capabilities::{AttachmentSupport, Capabilities, ComponentSupport};
use crate::itip::{ComponentKind, Method};

/// The capabilities, their XML and its ETag, computed once: the document is
/// served on every GET and its serial on every response.
#[derive(Debug, Clone)]
pub struct OwnCapabilities {
    pub capabilities: Capabilities,
    pub xml: String,
    pub etag: String,
}

impl OwnCapabilities {
    pub fn from_config(config: &Config) -> OwnCapabilities {
        let mut capabilities = Capabilities {
            serial: 0,
            versions: vec![crate::ischedule::VERSION.to_string()],
            scheduling: vec![
                ComponentSupport {
                    component: ComponentKind::VEvent,
                    methods: Some(Method::ALL.to_vec()),
                },
                ComponentSupport {
                    component: ComponentKind::VTodo,
                    methods: Some(Method::ALL.to_vec()),
                },
                ComponentSupport {
                    component: ComponentKind::VFreeBusy,
                    methods: Some(vec![Method::Request]),
                },
            ],
            calendar_data_types: vec![("text/calendar".into(), "2.0".into())],
            attachments: AttachmentSupport {
                inline: config.limits.inline_attachments,
                external: true,
            },
            rscales: vec!["GREGORIAN".into()],
            max_content_length: Some(config.limits.max_content_length),
            min_date_time: config.limits.min_date_time,
            max_date_time: config.limits.max_date_time,
            max_instances: config.limits.max_instances,
            max_recipients: Some(config.limits.max_recipients),
            administrator: config.administrator.clone(),
        };
        // The serial is a digest of the document itself: it changes exactly
        // when a setting that senders see changes, and survives restarts.
        capabilities.serial = serial_of(&capabilities.to_xml());
        let xml = capabilities.to_xml();
        let etag = format!(
            "\"{:016x}\"",
            digest::fnv1a(digest::FNV_OFFSET, &[xml.as_bytes()])
        );
        OwnCapabilities {
            capabilities,
            xml,
            etag,
        }
    }

    pub fn serial(&self) -> u64 {
        self.capabilities.serial
    }
}

/// A positive number that fits any receiver's 32-bit integer parser.
fn serial_of(document: &str) -> u64 {
    digest::fnv1a(digest::FNV_OFFSET, &[document.as_bytes()]) % 2_000_000_000 + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn serial_follows_the_settings_senders_see() {
        let a = Config::parse("", "a", Path::new(".")).unwrap();
        let b = Config::parse("[limits]\nmax_recipients = 7\n", "b", Path::new(".")).unwrap();
        let c = Config::parse("[dns]\nstrip_subdomains = true\n", "c", Path::new(".")).unwrap();
        let (a, b, c) = (
            OwnCapabilities::from_config(&a),
            OwnCapabilities::from_config(&b),
            OwnCapabilities::from_config(&c),
        );
        assert_ne!(a.serial(), b.serial());
        assert_ne!(a.etag, b.etag);
        assert_eq!(a.serial(), c.serial(), "DNS settings are not a capability");
        assert!(a.serial() > 0);
        assert_eq!(
            Capabilities::parse(a.xml.as_bytes()).unwrap(),
            a.capabilities
        );
    }
}
