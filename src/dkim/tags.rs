//! DKIM tag lists (RFC 6376 3.2): `name=value` pairs separated by `;`,
//! whitespace around names and values insignificant. Shared by the
//! signature header and the key records.

/// Tags in the order written; a name given twice is an error, as RFC
/// 6376 3.2 requires, so a forged second `d=` cannot hide behind the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagList {
    tags: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    #[error("the tag {0}= appears more than once")]
    Duplicate(String),
    #[error("'{0}' is not a name=value tag")]
    NotATag(String),
}

impl TagList {
    pub fn parse(text: &str) -> Result<TagList, TagError> {
        let mut tags: Vec<(String, String)> = Vec::new();
        for item in text.split(';') {
            let item = item.trim();
            if item.is_empty() {
                continue; // a trailing ';' is allowed
            }
            let (name, value) = item
                .split_once('=')
                .ok_or_else(|| TagError::NotATag(item.chars().take(40).collect()))?;
            let name = name.trim();
            if tags.iter().any(|(n, _)| n == name) {
                return Err(TagError::Duplicate(name.to_string()));
            }
            tags.push((name.to_string(), value.trim().to_string()));
        }
        Ok(TagList { tags })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Base64 tag values may be folded: whitespace inside them is not data.
pub fn without_whitespace(value: &str) -> String {
    value.chars().filter(|c| !c.is_ascii_whitespace()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_is_insignificant_and_duplicates_are_refused() {
        let t = TagList::parse("  v=1;\t\t d=example.com; s = dkim; t\t=\t1234;").unwrap();
        assert_eq!(t.get("s"), Some("dkim"));
        assert_eq!(t.get("t"), Some("1234"));
        assert_eq!(t.get("x"), None);
        assert_eq!(
            TagList::parse("d=a; d=b"),
            Err(TagError::Duplicate("d".into()))
        );
        assert!(TagList::parse("v=1; bogus").is_err());
        assert_eq!(without_whitespace("a b\t c"), "abc");
    }
}
