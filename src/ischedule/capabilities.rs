//! Receiver capabilities (spec clauses 7 and 10.2): the `query-result` a
//! receiver serves on GET, and the sender-side check of a message against
//! it, which clause 7 asks senders to make before sending anything.

use crate::ischedule::xml::{parse_document, Element, XmlError, XmlWriter};
use crate::ischedule::{IsError, VERSION};
use crate::itip::{ComponentKind, Method, Stamp};

/// One accepted component type (clause 10.2.1.3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentSupport {
    pub component: ComponentKind,
    /// `None`: any method, as the spec means by a component without
    /// `<method>` children. `Some(vec![])` comes only from a receiver that
    /// listed nothing but unknown methods: none of ours is allowed.
    pub methods: Option<Vec<Method>>,
}

/// Which ATTACH value types are accepted (clause 10.2.1.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AttachmentSupport {
    pub inline: bool,
    pub external: bool,
}

/// The content of `IS:capabilities` (clause 10.2.1). Absent limits are
/// `None` or empty and mean "no limit advertised".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    pub serial: u64,
    pub versions: Vec<String>,
    pub scheduling: Vec<ComponentSupport>,
    /// (content-type, version) pairs.
    pub calendar_data_types: Vec<(String, String)>,
    pub attachments: AttachmentSupport,
    pub rscales: Vec<String>,
    pub max_content_length: Option<u64>,
    pub min_date_time: Option<Stamp>,
    pub max_date_time: Option<Stamp>,
    pub max_instances: Option<u64>,
    pub max_recipients: Option<usize>,
    pub administrator: Option<String>,
}

/// What the sender knows about the message it is about to send; checked
/// against a receiver's capabilities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageFacts {
    pub component: ComponentKind,
    pub method: Method,
    pub content_length: u64,
    pub earliest: Option<Stamp>,
    pub latest: Option<Stamp>,
    /// `None`: not countable (unbounded, or bounded by UNTIL), and then
    /// never rejected for max-instances.
    pub instances: Option<u64>,
    pub inline_attachment: bool,
    pub external_attachment: bool,
}

/// The first way a message exceeds what a receiver advertises.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapabilityMismatch {
    #[error("the receiver offers iSchedule version(s) [{}], not {}", .offered.join(", "), VERSION)]
    Version { offered: Vec<String> },
    #[error("the receiver does not accept {0} scheduling messages")]
    Component(ComponentKind),
    #[error("the receiver does not accept METHOD:{method} for {component}")]
    Method {
        component: ComponentKind,
        method: Method,
    },
    #[error("the message is {size} octets, over the receiver's max-content-length of {max}")]
    ContentLength { size: u64, max: u64 },
    #[error("the message has a date {earliest}, before the receiver's min-date-time {min}")]
    MinDateTime { earliest: Stamp, min: Stamp },
    #[error("the message has a date {latest}, after the receiver's max-date-time {max}")]
    MaxDateTime { latest: Stamp, max: Stamp },
    #[error("the message has {count} instances, over the receiver's max-instances of {max}")]
    MaxInstances { count: u64, max: u64 },
    #[error("the message has an inline attachment, which the receiver does not accept")]
    InlineAttachment,
    #[error("the message has an external (URI) attachment, which the receiver does not accept")]
    ExternalAttachment,
}

impl CapabilityMismatch {
    /// The clause 8.3 code the receiver would have answered with, so a
    /// message refused before sending reports the same error as one
    /// refused by the receiver.
    pub fn is_error(&self) -> IsError {
        match self {
            CapabilityMismatch::Version { .. } => IsError::VersionNotSupported,
            CapabilityMismatch::Component(_) | CapabilityMismatch::Method { .. } => {
                IsError::InvalidSchedulingMessage
            }
            CapabilityMismatch::ContentLength { .. } => IsError::MaxContentLength,
            CapabilityMismatch::MinDateTime { .. } => IsError::MinDateTime,
            CapabilityMismatch::MaxDateTime { .. } => IsError::MaxDateTime,
            CapabilityMismatch::MaxInstances { .. } => IsError::MaxInstances,
            CapabilityMismatch::InlineAttachment | CapabilityMismatch::ExternalAttachment => {
                IsError::AttachmentTypeNotSupported
            }
        }
    }
}

impl Capabilities {
    /// Writes `query-result` with the children in clause 10.2.1 order.
    /// The elements the DTD requires are always written; the limits only
    /// when set. A component whose method list is empty is left out: an
    /// empty `<component>` would say "any method", the opposite.
    pub fn to_xml(&self) -> String {
        let mut w = XmlWriter::document("query-result");
        w.start("capabilities");
        w.text_element("serial-number", &self.serial.to_string());
        w.start("versions");
        for version in &self.versions {
            w.text_element("version", version);
        }
        w.end();
        self.write_scheduling(&mut w);
        w.start("calendar-data-types");
        for (content_type, version) in &self.calendar_data_types {
            w.empty_element(
                "calendar-data-type",
                &[("content-type", content_type), ("version", version)],
            );
        }
        w.end();
        w.start("attachments");
        if self.attachments.inline {
            w.empty_element("inline", &[]);
        }
        if self.attachments.external {
            w.empty_element("external", &[]);
        }
        w.end();
        if !self.rscales.is_empty() {
            w.start("rscales");
            for rscale in &self.rscales {
                w.text_element("rscale", rscale);
            }
            w.end();
        }
        let limits = [
            (
                "max-content-length",
                self.max_content_length.map(|n| n.to_string()),
            ),
            ("min-date-time", self.min_date_time.map(|s| s.to_string())),
            ("max-date-time", self.max_date_time.map(|s| s.to_string())),
            ("max-instances", self.max_instances.map(|n| n.to_string())),
            ("max-recipients", self.max_recipients.map(|n| n.to_string())),
            ("administrator", self.administrator.clone()),
        ];
        for (name, value) in limits {
            if let Some(value) = value {
                w.text_element(name, &value);
            }
        }
        w.finish()
    }

    fn write_scheduling(&self, w: &mut XmlWriter) {
        w.start("scheduling-messages");
        for support in &self.scheduling {
            let name = [("name", support.component.as_str())];
            match &support.methods {
                None => w.empty_element("component", &name),
                Some(methods) if methods.is_empty() => {}
                Some(methods) => {
                    w.start_with("component", &name);
                    for method in methods {
                        w.empty_element("method", &[("name", method.as_str())]);
                    }
                    w.end();
                }
            }
        }
        w.end();
    }

    /// Reads a receiver's `query-result`. Tolerant where tolerance loses
    /// nothing: names are matched locally, unknown elements, components
    /// (VPOLL, ...) and methods are skipped, an empty limit counts as
    /// absent, a missing serial number as 0. A limit that is present but
    /// unreadable is an error, since guessing it could let through what
    /// the receiver will refuse.
    pub fn parse(xml: &[u8]) -> Result<Capabilities, XmlError> {
        let root = parse_document(xml, "query-result")?;
        let caps = root.child("capabilities").ok_or(XmlError::MissingElement {
            parent: "query-result",
            child: "capabilities",
        })?;
        Ok(Capabilities {
            serial: number(caps, "serial-number")?.unwrap_or(0),
            versions: texts(caps, "versions", "version"),
            scheduling: caps
                .child("scheduling-messages")
                .map(scheduling)
                .unwrap_or_default(),
            calendar_data_types: caps
                .child("calendar-data-types")
                .map(calendar_data_types)
                .unwrap_or_default(),
            attachments: caps
                .child("attachments")
                .map(|a| AttachmentSupport {
                    inline: a.child("inline").is_some(),
                    external: a.child("external").is_some(),
                })
                .unwrap_or_default(),
            rscales: texts(caps, "rscales", "rscale"),
            max_content_length: number(caps, "max-content-length")?,
            min_date_time: stamp(caps, "min-date-time")?,
            max_date_time: stamp(caps, "max-date-time")?,
            max_instances: number(caps, "max-instances")?,
            max_recipients: number(caps, "max-recipients")?,
            administrator: caps
                .child("administrator")
                .map(Element::trimmed_text)
                .filter(|a| !a.is_empty()),
        })
    }

    pub fn supports_version(&self, version: &str) -> bool {
        self.versions.iter().any(|v| v == version)
    }

    /// Checks a message before it is sent (clause 7), returning the first
    /// failure in the order: version, component, method, content length,
    /// min date, max date, instances, attachments.
    pub fn check(&self, facts: &MessageFacts) -> Result<(), CapabilityMismatch> {
        if !self.supports_version(VERSION) {
            return Err(CapabilityMismatch::Version {
                offered: self.versions.clone(),
            });
        }
        self.check_message_type(facts.component, facts.method)?;
        if let Some(max) = self
            .max_content_length
            .filter(|&max| facts.content_length > max)
        {
            return Err(CapabilityMismatch::ContentLength {
                size: facts.content_length,
                max,
            });
        }
        if let (Some(earliest), Some(min)) = (facts.earliest, self.min_date_time) {
            if earliest < min {
                return Err(CapabilityMismatch::MinDateTime { earliest, min });
            }
        }
        if let (Some(latest), Some(max)) = (facts.latest, self.max_date_time) {
            if latest > max {
                return Err(CapabilityMismatch::MaxDateTime { latest, max });
            }
        }
        if let (Some(count), Some(max)) = (facts.instances, self.max_instances) {
            if count > max {
                return Err(CapabilityMismatch::MaxInstances { count, max });
            }
        }
        if facts.inline_attachment && !self.attachments.inline {
            return Err(CapabilityMismatch::InlineAttachment);
        }
        if facts.external_attachment && !self.attachments.external {
            return Err(CapabilityMismatch::ExternalAttachment);
        }
        Ok(())
    }

    /// A component may be listed more than once; any listing that allows
    /// the method is enough.
    fn check_message_type(
        &self,
        component: ComponentKind,
        method: Method,
    ) -> Result<(), CapabilityMismatch> {
        let mut listed = self
            .scheduling
            .iter()
            .filter(|s| s.component == component)
            .peekable();
        if listed.peek().is_none() {
            return Err(CapabilityMismatch::Component(component));
        }
        if listed.any(|s| s.methods.as_ref().is_none_or(|m| m.contains(&method))) {
            Ok(())
        } else {
            Err(CapabilityMismatch::Method { component, method })
        }
    }
}

/// Components we schedule, with their known methods; unknown ones skipped.
fn scheduling(el: &Element) -> Vec<ComponentSupport> {
    el.children_named("component")
        .filter_map(|c| {
            let component = ComponentKind::parse(c.attribute("name")?)?;
            let listed: Vec<&Element> = c.children_named("method").collect();
            let methods = (!listed.is_empty()).then(|| {
                listed
                    .iter()
                    .filter_map(|m| Method::parse(m.attribute("name")?))
                    .collect()
            });
            Some(ComponentSupport { component, methods })
        })
        .collect()
}

/// Pairs with the DTD's attribute defaults (clause 10.2.1.4.1) filled in.
fn calendar_data_types(el: &Element) -> Vec<(String, String)> {
    el.children_named("calendar-data-type")
        .map(|t| {
            (
                t.attribute("content-type")
                    .unwrap_or("text/calendar")
                    .to_string(),
                t.attribute("version").unwrap_or("2.0").to_string(),
            )
        })
        .collect()
}

/// The non-empty texts of `<outer><inner>..</inner>..</outer>`.
fn texts(parent: &Element, outer: &str, inner: &'static str) -> Vec<String> {
    parent
        .child(outer)
        .into_iter()
        .flat_map(|o| o.children_named(inner))
        .map(Element::trimmed_text)
        .filter(|t| !t.is_empty())
        .collect()
}

/// The text of a child element, `None` when absent or empty.
fn value(parent: &Element, name: &str) -> Option<String> {
    parent
        .child(name)
        .map(Element::trimmed_text)
        .filter(|t| !t.is_empty())
}

fn number<T: std::str::FromStr>(
    parent: &Element,
    name: &'static str,
) -> Result<Option<T>, XmlError> {
    value(parent, name)
        .map(|text| {
            text.parse().map_err(|_| XmlError::BadValue {
                element: name,
                value: text,
                expected: "a non-negative integer",
            })
        })
        .transpose()
}

fn stamp(parent: &Element, name: &'static str) -> Result<Option<Stamp>, XmlError> {
    value(parent, name)
        .map(|text| {
            Stamp::parse(&text).ok_or(XmlError::BadValue {
                element: name,
                value: text,
                expected: "an iCalendar DATE-TIME",
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Clause 7.1's example response body.
    const SPEC_EXAMPLE: &str = r#"<?xml version="1.0" encoding="utf-8" ?>
<query-result xmlns="urn:ietf:params:xml:ns:ischedule">
  <capabilities>
    <serial-number>123</serial-number>
    <versions>
      <version>1.0</version>
    </versions>
    <scheduling-messages>
      <component name="VEVENT">
        <method name="REQUEST"/>
        <method name="ADD"/>
        <method name="REPLY"/>
        <method name="CANCEL"/>
      </component>
      <component name="VTODO">
        <method name="REQUEST"/>
        <method name="ADD"/>
        <method name="REPLY"/>
        <method name="CANCEL"/>
      </component>
      <component name="VFREEBUSY">
        <method name="REQUEST"/>
      </component>
    </scheduling-messages>
    <calendar-data-types>
      <calendar-data-type
        content-type="text/calendar" version="2.0"/>
    </calendar-data-types>
    <attachments>
      <inline/>
      <external/>
    </attachments>
    <rscales>
      <rscale>GREGORIAN</rscale>
      <rscale>CHINESE</rscale>
    </rscales>
    <max-content-length>102400</max-content-length>
    <min-date-time>19910101T000000Z</min-date-time>
    <max-date-time>20381231T000000Z</max-date-time>
    <max-instances>150</max-instances>
    <max-recipients>250</max-recipients>
    <administrator>mailto:ischedule-admin@example.com</administrator>
  </capabilities>
</query-result>
"#;

    fn stamp(s: &str) -> Stamp {
        Stamp::parse(s).unwrap()
    }

    fn spec_example() -> Capabilities {
        use Method::*;
        let itip = vec![Request, Add, Reply, Cancel];
        Capabilities {
            serial: 123,
            versions: vec!["1.0".into()],
            scheduling: vec![
                ComponentSupport {
                    component: ComponentKind::VEvent,
                    methods: Some(itip.clone()),
                },
                ComponentSupport {
                    component: ComponentKind::VTodo,
                    methods: Some(itip),
                },
                ComponentSupport {
                    component: ComponentKind::VFreeBusy,
                    methods: Some(vec![Request]),
                },
            ],
            calendar_data_types: vec![("text/calendar".into(), "2.0".into())],
            attachments: AttachmentSupport {
                inline: true,
                external: true,
            },
            rscales: vec!["GREGORIAN".into(), "CHINESE".into()],
            max_content_length: Some(102_400),
            min_date_time: Some(stamp("19910101T000000Z")),
            max_date_time: Some(stamp("20381231T000000Z")),
            max_instances: Some(150),
            max_recipients: Some(250),
            administrator: Some("mailto:ischedule-admin@example.com".into()),
        }
    }

    fn minimal() -> Capabilities {
        Capabilities {
            serial: 0,
            versions: vec![],
            scheduling: vec![],
            calendar_data_types: vec![],
            attachments: AttachmentSupport::default(),
            rscales: vec![],
            max_content_length: None,
            min_date_time: None,
            max_date_time: None,
            max_instances: None,
            max_recipients: None,
            administrator: None,
        }
    }

    fn facts() -> MessageFacts {
        MessageFacts {
            component: ComponentKind::VEvent,
            method: Method::Request,
            content_length: 2000,
            earliest: Some(stamp("20040902T130000Z")),
            latest: Some(stamp("20040902T140000Z")),
            instances: Some(1),
            inline_attachment: false,
            external_attachment: false,
        }
    }

    #[test]
    fn spec_example_parses() {
        assert_eq!(
            Capabilities::parse(SPEC_EXAMPLE.as_bytes()).unwrap(),
            spec_example()
        );
    }

    #[test]
    fn round_trips() {
        let mut caps = spec_example();
        caps.scheduling.push(ComponentSupport {
            component: ComponentKind::VJournal,
            methods: None,
        });
        caps.administrator = Some("mailto:admin@example.com?subject=a&b<c>".into());
        let xml = caps.to_xml();
        assert_eq!(Capabilities::parse(xml.as_bytes()).unwrap(), caps);
        assert_eq!(
            Capabilities::parse(minimal().to_xml().as_bytes()).unwrap(),
            minimal()
        );
    }

    #[test]
    fn writes_children_in_clause_order() {
        let xml = spec_example().to_xml();
        assert!(xml.starts_with(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n\
             <query-result xmlns=\"urn:ietf:params:xml:ns:ischedule\"><capabilities>\
             <serial-number>123</serial-number><versions><version>1.0</version></versions>\
             <scheduling-messages><component name=\"VEVENT\"><method name=\"REQUEST\"/>"
        ));
        let order = [
            "<serial-number>",
            "<versions>",
            "<scheduling-messages>",
            "<calendar-data-types>",
            "<attachments>",
            "<rscales>",
            "<max-content-length>102400<",
            "<min-date-time>19910101T000000Z<",
            "<max-date-time>20381231T000000Z<",
            "<max-instances>",
            "<max-recipients>",
            "<administrator>",
        ];
        let positions: Vec<usize> = order.iter().map(|tag| xml.find(tag).unwrap()).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{xml}");
        assert!(
            xml.contains("<calendar-data-type content-type=\"text/calendar\" version=\"2.0\"/>")
        );
        let minimal = minimal().to_xml();
        for absent in ["rscales", "max-", "min-", "administrator"] {
            assert!(!minimal.contains(absent), "{minimal}");
        }
    }

    #[test]
    fn tolerant_parse() {
        let xml = r#"<Q:query-result xmlns:Q="urn:ietf:params:xml:ns:ishedule">
          <Q:capabilities>
            <Q:versions><Q:version> 1.0 </Q:version><Q:version/></Q:versions>
            <Q:x-vendor><deep><deeper/></deep></Q:x-vendor>
            <Q:scheduling-messages>
              <Q:component name="VPOLL"><Q:method name="REQUEST"/></Q:component>
              <Q:component name="vevent"/>
              <Q:component name="VTODO"><Q:method name="POLLSTATUS"/></Q:component>
              <Q:component name="VJOURNAL">
                <Q:method name="PUBLISH"/><Q:method name="X-FOO"/>
              </Q:component>
              <Q:component><Q:method name="REQUEST"/></Q:component>
            </Q:scheduling-messages>
            <Q:calendar-data-types><Q:calendar-data-type/></Q:calendar-data-types>
            <Q:max-instances> </Q:max-instances>
          </Q:capabilities>
        </Q:query-result>"#;
        let caps = Capabilities::parse(xml.as_bytes()).unwrap();
        assert_eq!(caps.serial, 0);
        assert_eq!(caps.versions, ["1.0"]);
        assert_eq!(
            caps.scheduling,
            [
                ComponentSupport {
                    component: ComponentKind::VEvent,
                    methods: None
                },
                ComponentSupport {
                    component: ComponentKind::VTodo,
                    methods: Some(vec![])
                },
                ComponentSupport {
                    component: ComponentKind::VJournal,
                    methods: Some(vec![Method::Publish])
                },
            ]
        );
        assert_eq!(
            caps.calendar_data_types,
            [("text/calendar".to_string(), "2.0".to_string())]
        );
        assert_eq!(caps.attachments, AttachmentSupport::default());
        assert_eq!(caps.max_instances, None);
        // A component that allows no known method is not written as "any".
        let written = Capabilities::parse(caps.to_xml().as_bytes()).unwrap();
        assert!(written
            .scheduling
            .iter()
            .all(|s| s.component != ComponentKind::VTodo));
    }

    #[test]
    fn structural_and_value_errors() {
        let err = Capabilities::parse(b"<schedule-response/>").unwrap_err();
        assert!(
            matches!(err, XmlError::WrongRoot { ref found, .. } if found == "schedule-response")
        );
        let err = Capabilities::parse(b"<query-result/>").unwrap_err();
        assert!(matches!(
            err,
            XmlError::MissingElement {
                child: "capabilities",
                ..
            }
        ));
        let bad = |body: &str| {
            let xml = format!("<query-result><capabilities>{body}</capabilities></query-result>");
            Capabilities::parse(xml.as_bytes()).unwrap_err()
        };
        let err = bad("<max-content-length>100k</max-content-length>");
        assert!(matches!(
            err,
            XmlError::BadValue {
                element: "max-content-length",
                ..
            }
        ));
        assert!(err.to_string().contains("'100k'"));
        let err = bad("<serial-number>-1</serial-number>");
        assert!(matches!(
            err,
            XmlError::BadValue {
                element: "serial-number",
                ..
            }
        ));
        let err = bad("<min-date-time>1991-01-01</min-date-time>");
        assert!(matches!(
            err,
            XmlError::BadValue {
                element: "min-date-time",
                ..
            }
        ));
        let deep = format!(
            "<query-result><capabilities>{}{}</capabilities></query-result>",
            "<x>".repeat(40),
            "</x>".repeat(40)
        );
        assert!(matches!(
            Capabilities::parse(deep.as_bytes()),
            Err(XmlError::TooDeep)
        ));
        for end in 0..SPEC_EXAMPLE.len() - 20 {
            assert!(Capabilities::parse(&SPEC_EXAMPLE.as_bytes()[..end]).is_err());
        }
    }

    #[test]
    fn a_message_within_all_limits_passes() {
        let caps = spec_example();
        assert!(caps.supports_version("1.0"));
        assert!(!caps.supports_version("2.0"));
        assert_eq!(caps.check(&facts()), Ok(()));
        let mut f = facts();
        f.instances = None;
        f.content_length = 102_400;
        f.inline_attachment = true;
        f.external_attachment = true;
        assert_eq!(caps.check(&f), Ok(()));
        let mut open = spec_example();
        open.max_instances = None;
        open.max_content_length = None;
        open.min_date_time = None;
        open.max_date_time = None;
        f.instances = Some(1_000_000);
        f.content_length = u64::MAX;
        f.earliest = Some(stamp("16000101"));
        assert_eq!(open.check(&f), Ok(()));
    }

    #[test]
    fn each_mismatch() {
        let caps = spec_example();
        let fails = |caps: &Capabilities, change: &dyn Fn(&mut MessageFacts)| {
            let mut f = facts();
            change(&mut f);
            caps.check(&f).unwrap_err()
        };

        let mut v2 = caps.clone();
        v2.versions = vec!["2.0".into(), "3.0".into()];
        let err = fails(&v2, &|_| {});
        assert_eq!(
            err,
            CapabilityMismatch::Version {
                offered: vec!["2.0".into(), "3.0".into()]
            }
        );
        assert_eq!(err.is_error(), IsError::VersionNotSupported);
        assert!(err.to_string().contains("[2.0, 3.0], not 1.0"));

        let err = fails(&caps, &|f| f.component = ComponentKind::VJournal);
        assert_eq!(err, CapabilityMismatch::Component(ComponentKind::VJournal));
        assert_eq!(err.is_error(), IsError::InvalidSchedulingMessage);
        assert!(err.to_string().contains("VJOURNAL"));

        let err = fails(&caps, &|f| {
            f.component = ComponentKind::VFreeBusy;
            f.method = Method::Reply;
        });
        assert_eq!(
            err,
            CapabilityMismatch::Method {
                component: ComponentKind::VFreeBusy,
                method: Method::Reply
            }
        );
        assert_eq!(err.is_error(), IsError::InvalidSchedulingMessage);
        assert!(err.to_string().contains("METHOD:REPLY for VFREEBUSY"));

        let err = fails(&caps, &|f| f.content_length = 102_401);
        assert_eq!(
            err,
            CapabilityMismatch::ContentLength {
                size: 102_401,
                max: 102_400
            }
        );
        assert_eq!(err.is_error(), IsError::MaxContentLength);
        assert!(err.to_string().contains("102401 octets") && err.to_string().contains("102400"));

        let err = fails(&caps, &|f| f.earliest = Some(stamp("19901231")));
        assert_eq!(
            err,
            CapabilityMismatch::MinDateTime {
                earliest: stamp("19901231"),
                min: stamp("19910101T000000Z")
            }
        );
        assert_eq!(err.is_error(), IsError::MinDateTime);
        assert!(
            err.to_string().contains("19901231T000000Z")
                && err.to_string().contains("19910101T000000Z")
        );

        let err = fails(&caps, &|f| f.latest = Some(stamp("20390101T000000Z")));
        assert_eq!(
            err,
            CapabilityMismatch::MaxDateTime {
                latest: stamp("20390101T000000Z"),
                max: stamp("20381231T000000Z")
            }
        );
        assert_eq!(err.is_error(), IsError::MaxDateTime);
        assert!(err.to_string().contains("max-date-time 20381231T000000Z"));

        let err = fails(&caps, &|f| f.instances = Some(151));
        assert_eq!(
            err,
            CapabilityMismatch::MaxInstances {
                count: 151,
                max: 150
            }
        );
        assert_eq!(err.is_error(), IsError::MaxInstances);
        assert!(err.to_string().contains("151 instances") && err.to_string().contains("150"));

        let mut no_attachments = caps.clone();
        no_attachments.attachments = AttachmentSupport::default();
        let err = fails(&no_attachments, &|f| f.inline_attachment = true);
        assert_eq!(err, CapabilityMismatch::InlineAttachment);
        assert_eq!(err.is_error(), IsError::AttachmentTypeNotSupported);
        let err = fails(&no_attachments, &|f| f.external_attachment = true);
        assert_eq!(err, CapabilityMismatch::ExternalAttachment);
        assert_eq!(err.is_error(), IsError::AttachmentTypeNotSupported);
        assert!(err.to_string().contains("external"));
    }

    #[test]
    fn first_failure_wins_and_repeated_components_combine() {
        let mut caps = spec_example();
        caps.versions.clear();
        let err = caps
            .check(&MessageFacts {
                component: ComponentKind::VJournal,
                content_length: u64::MAX,
                ..facts()
            })
            .unwrap_err();
        assert!(matches!(err, CapabilityMismatch::Version { ref offered } if offered.is_empty()));

        let caps = spec_example();
        let err = caps
            .check(&MessageFacts {
                method: Method::Publish,
                content_length: u64::MAX,
                inline_attachment: true,
                ..facts()
            })
            .unwrap_err();
        assert!(matches!(err, CapabilityMismatch::Method { .. }));

        let mut caps = spec_example();
        caps.scheduling.push(ComponentSupport {
            component: ComponentKind::VEvent,
            methods: Some(vec![Method::Publish]),
        });
        let publish = MessageFacts {
            method: Method::Publish,
            ..facts()
        };
        assert_eq!(caps.check(&publish), Ok(()));
    }
}
