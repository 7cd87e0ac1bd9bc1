//! Topic names and topic filters, validated once at the edge (MQTT section 4.7).

use bytestring::ByteString;

/// Prefix of a shared subscription filter, `$share/<group>/<filter>`.
pub const SHARED_PREFIX: &str = "$share/";

/// Why a string is not a valid topic name or filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// Topic names and filters are at least one character long.
    #[error("[MQTT-4.7.3-1] topic is empty")]
    Empty,
    /// A topic name contains `+` or `#`.
    #[error("[MQTT-4.7.0-1] topic name contains a wildcard")]
    WildcardInName,
    /// `#` is not the last character on its own level.
    #[error("[MQTT-4.7.1-2] multi-level wildcard must be last and occupy a whole level")]
    MultiLevelWildcardMisplaced,
    /// `+` does not occupy a whole level.
    #[error("[MQTT-4.7.1-3] single-level wildcard must occupy a whole level")]
    SingleLevelWildcardMisplaced,
    /// A shared subscription has an empty or wildcard group name, or no filter.
    #[error(
        "[MQTT-4.8.2-1] shared subscription needs a group name without wildcards and a filter"
    )]
    InvalidSharedSubscription,
    /// The topic contains U+0000.
    #[error("[MQTT-4.7.3-2] topic contains the null character")]
    NullCharacter,
}

/// A topic name valid for PUBLISH: non-empty, no wildcards.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(ByteString);

impl TopicName {
    /// Validates a topic name [MQTT-4.7.3-1], [MQTT-4.7.0-1].
    pub fn new(name: impl Into<ByteString>) -> Result<TopicName, TopicError> {
        let name = name.into();
        validate_name(&name)?;
        Ok(TopicName(name))
    }

    /// The topic as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shared string, without a copy.
    pub fn as_bytestring(&self) -> &ByteString {
        &self.0
    }

    /// Unwraps the shared string.
    pub fn into_inner(self) -> ByteString {
        self.0
    }
}

impl std::fmt::Display for TopicName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub(crate) fn validate_name(name: &str) -> Result<(), TopicError> {
    if name.is_empty() {
        return Err(TopicError::Empty);
    }
    if name.contains('\0') {
        return Err(TopicError::NullCharacter);
    }
    if name.contains(['+', '#']) {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// A topic filter valid for SUBSCRIBE, possibly a shared subscription.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicFilter {
    raw: ByteString,
    /// Byte offset of the filter proper: 0, or past `$share/<group>/`.
    filter_start: usize,
}

impl TopicFilter {
    /// Validates a topic filter, recognising `$share/<group>/<filter>` [MQTT-4.7.1-2],
    /// [MQTT-4.7.1-3], [MQTT-4.8.2-1].
    pub fn parse(raw: impl Into<ByteString>) -> Result<TopicFilter, TopicError> {
        let raw = raw.into();
        let mut filter_start = 0;
        if let Some(rest) = raw.strip_prefix(SHARED_PREFIX) {
            let Some((group, filter)) = rest.split_once('/') else {
                return Err(TopicError::InvalidSharedSubscription);
            };
            if group.is_empty() || group.contains(['+', '#']) || filter.is_empty() {
                return Err(TopicError::InvalidSharedSubscription);
            }
            filter_start = SHARED_PREFIX.len() + group.len() + 1;
        }
        validate_filter(&raw[filter_start..])?;
        Ok(TopicFilter { raw, filter_start })
    }

    /// The filter as the client sent it, including any `$share/<group>/` prefix.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The filter that is matched against topic names (without a share prefix).
    pub fn filter(&self) -> &str {
        &self.raw[self.filter_start..]
    }

    /// The share group name, for a shared subscription.
    pub fn share_group(&self) -> Option<&str> {
        (self.filter_start > 0).then(|| &self.raw[SHARED_PREFIX.len()..self.filter_start - 1])
    }

    /// True when the filter contains `+` or `#`.
    pub fn has_wildcards(&self) -> bool {
        self.filter().contains(['+', '#'])
    }

    /// Whether `topic` matches this filter, including the rule that wildcards in the first level
    /// do not match topics starting with `$` [MQTT-4.7.2-1].
    pub fn matches(&self, topic: &str) -> bool {
        filter_matches(self.filter(), topic)
    }
}

impl std::fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.raw)
    }
}

fn validate_filter(filter: &str) -> Result<(), TopicError> {
    if filter.is_empty() {
        return Err(TopicError::Empty);
    }
    if filter.contains('\0') {
        return Err(TopicError::NullCharacter);
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err(TopicError::MultiLevelWildcardMisplaced);
        }
        if level.contains('+') && level != "+" {
            return Err(TopicError::SingleLevelWildcardMisplaced);
        }
    }
    Ok(())
}

/// Matches a validated filter (without share prefix) against a topic name, with wildcards in
/// the first level not matching topics starting with `$` [MQTT-4.7.2-1].
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut topic_levels = topic.split('/');
    for f in filter.split('/') {
        if f == "#" {
            return true;
        }
        match topic_levels.next() {
            Some(t) if f == "+" || f == t => {}
            _ => return false,
        }
    }
    topic_levels.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(s: &'static str) -> TopicFilter {
        TopicFilter::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn names_refuse_wildcards_and_empty() {
        // [MQTT-4.7.3-1]
        assert_eq!(TopicName::new(""), Err(TopicError::Empty));
        // [MQTT-4.7.0-1]
        assert_eq!(TopicName::new("a/+"), Err(TopicError::WildcardInName));
        assert_eq!(TopicName::new("a/#"), Err(TopicError::WildcardInName));
        assert!(TopicName::new("/").is_ok());
        assert!(TopicName::new(" ").is_ok());
    }

    #[test]
    fn filters_place_wildcards_on_whole_levels() {
        // [MQTT-4.7.1-2]
        assert_eq!(
            TopicFilter::parse("a/#/b"),
            Err(TopicError::MultiLevelWildcardMisplaced)
        );
        assert_eq!(
            TopicFilter::parse("a#"),
            Err(TopicError::MultiLevelWildcardMisplaced)
        );
        // [MQTT-4.7.1-3]
        assert_eq!(
            TopicFilter::parse("a+/b"),
            Err(TopicError::SingleLevelWildcardMisplaced)
        );
        for ok in ["#", "+", "+/+", "/+", "a/#", "a/+/c", "+/tennis/#", "/"] {
            assert!(TopicFilter::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn shared_subscriptions_are_recognised() {
        let f = filter("$share/group/a/+");
        assert_eq!(f.share_group(), Some("group"));
        assert_eq!(f.filter(), "a/+");
        // [MQTT-4.8.2-1]
        assert!(TopicFilter::parse("$share/gr+oup/a").is_err());
        assert!(TopicFilter::parse("$share//a").is_err());
        assert!(TopicFilter::parse("$share/group").is_err());
        assert!(TopicFilter::parse("$share/group/").is_err());
    }

    #[test]
    fn matching_follows_the_spec_examples() {
        // Examples of section 4.7.1.2 and 4.7.1.3.
        assert!(filter("sport/tennis/player1/#").matches("sport/tennis/player1"));
        assert!(filter("sport/tennis/player1/#").matches("sport/tennis/player1/ranking"));
        assert!(filter("sport/#").matches("sport"));
        assert!(filter("sport/tennis/+").matches("sport/tennis/player1"));
        assert!(!filter("sport/tennis/+").matches("sport/tennis/player1/ranking"));
        assert!(!filter("sport/+").matches("sport"));
        assert!(filter("sport/+").matches("sport/"));
        assert!(filter("+/+").matches("/finance"));
        assert!(filter("/+").matches("/finance"));
        assert!(!filter("+").matches("/finance"));
    }

    #[test]
    fn wildcards_at_first_level_skip_dollar_topics() {
        // [MQTT-4.7.2-1]
        assert!(!filter("#").matches("$SYS/broker"));
        assert!(!filter("+/monitor/Clients").matches("$SYS/monitor/Clients"));
        assert!(filter("$SYS/#").matches("$SYS/monitor/Clients"));
        assert!(filter("$SYS/monitor/+").matches("$SYS/monitor/Clients"));
    }
}
