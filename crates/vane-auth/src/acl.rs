//! Topic authorization: an ACL file of `allow`/`deny` rules by user, client id or anonymity,
//! for publish, subscribe or both, with `%u`/`%c` substitution; first match wins.
//!
//! One rule per line, fields separated by white space:
//!
//! ```text
//! # comment
//! allow  user sensor1      publish    sensors/sensor1/#
//! allow  user dashboard    subscribe  sensors/#
//! deny   any               all        secret/#
//! allow  authenticated     all        users/%u/#
//! allow  client gateway-7  publish    devices/%c/status
//! allow  anonymous         subscribe  public/#
//! ```
//!
//! * `allow` or `deny`;
//! * who: `user NAME` (the authenticated user name), `client ID` (the client identifier),
//!   `anonymous` (no authenticated user), `authenticated` (any authenticated user) or `any`;
//! * what: `publish`, `subscribe` (which also means receiving messages) or `all`;
//! * a topic pattern, the rest of the line: an MQTT topic filter (`+`, `#`) in which `%u`
//!   stands for the user name, `%c` for the client id and `%%` for `%`. A substituted value
//!   is compared as text with one whole topic level, so a user called `+` or `a/b` never
//!   widens a rule; a rule with `%u` never applies to an anonymous client.
//!
//! Decisions, with the first rule that applies deciding:
//! * **publish** to a topic, and **receiving** a message on a topic (checked for every
//!   delivery): the first rule for that client and action whose pattern matches the topic.
//! * **subscribe** to a filter: the first rule whose pattern *covers* the filter, i.e. matches
//!   every topic the filter can match (`sensors/#` is not covered by `sensors/+/temp`).
//!   Rules that only overlap the filter do not decide; the per-delivery check applies them.
//! * When no rule decides, the configured default applies, except for topics and filters
//!   starting with `$` (such as `$SYS/...`): those need an explicit rule whose pattern starts
//!   with the same literal level, and publishing to `$SYS` is always refused.
//!
//! Shared subscriptions are checked on their filter without `$share/<group>/`.

use std::fmt;

/// Who is asking: the authenticated user name (`None` for an anonymous client) and the client
/// identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AclIdentity<'a> {
    /// The user name the client authenticated as, if any.
    pub username: Option<&'a str>,
    /// The client identifier.
    pub client_id: &'a str,
}

/// What a client wants to do with a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AclAction {
    /// Publish to a topic name.
    Publish,
    /// Subscribe to a filter.
    Subscribe,
    /// Receive a message published on a topic name (granted by `subscribe` rules).
    Receive,
}

impl fmt::Display for AclAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AclAction::Publish => "publish",
            AclAction::Subscribe => "subscribe",
            AclAction::Receive => "receive",
        })
    }
}

/// A line of an ACL file that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct AclError {
    /// The 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Who {
    User(String),
    Client(String),
    Anonymous,
    Authenticated,
    Any,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    User,
    Client,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    /// `#`: this level and everything below, and the parent level.
    Multi,
    /// `+`: exactly one level.
    Single,
    /// A level without substitution.
    Text(String),
    /// A level with `%u` or `%c` in it.
    Template(Vec<Part>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    allow: bool,
    who: Who,
    publish: bool,
    subscribe: bool,
    pattern: Vec<Level>,
}

/// A parsed ACL file and its default decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    rules: Vec<Rule>,
    default_allow: bool,
}

/// Longest accepted line, so a hostile or broken file cannot make one rule huge.
const MAX_LINE: usize = 65_535;

impl Acl {
    /// Parses an ACL file. `default_allow` is the decision when no rule applies (never for
    /// `$` topics). Any line that is not a comment, blank or a valid rule is an error naming
    /// the line: a broken file never means "allow".
    pub fn parse(text: &str, default_allow: bool) -> Result<Acl, AclError> {
        let mut rules = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            let fail = |reason: String| AclError {
                line: line_no,
                reason,
            };
            if line.len() > MAX_LINE {
                return Err(fail(format!("longer than {MAX_LINE} bytes")));
            }
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            rules.push(parse_rule(trimmed).map_err(fail)?);
        }
        Ok(Acl {
            rules,
            default_allow,
        })
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True when the file has no rules (every decision is the default).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The decision when no rule applies.
    pub fn default_allow(&self) -> bool {
        self.default_allow
    }

    /// May `who` publish to the topic name `topic`?
    pub fn may_publish(&self, who: AclIdentity<'_>, topic: &str) -> bool {
        if topic == "$SYS" || topic.starts_with("$SYS/") {
            // The broker alone publishes there.
            return false;
        }
        self.decide_topic(who, topic, true)
    }

    /// May `who` receive a message published on `topic`? Granted by `subscribe` rules.
    pub fn may_receive(&self, who: AclIdentity<'_>, topic: &str) -> bool {
        self.decide_topic(who, topic, false)
    }

    /// May `who` subscribe to `filter` (given without any `$share/<group>/` prefix)?
    pub fn may_subscribe(&self, who: AclIdentity<'_>, filter: &str) -> bool {
        let levels: Vec<&str> = filter.split('/').collect();
        for rule in &self.rules {
            if rule.subscribe && rule.who.applies(who) && covers(&rule.pattern, &levels, who) {
                return rule.allow;
            }
        }
        self.default_allow && !filter.starts_with('$')
    }

    /// May `who` do `action` with `topic` (a filter for [`AclAction::Subscribe`])?
    pub fn check(&self, who: AclIdentity<'_>, action: AclAction, topic: &str) -> bool {
        match action {
            AclAction::Publish => self.may_publish(who, topic),
            AclAction::Subscribe => self.may_subscribe(who, topic),
            AclAction::Receive => self.may_receive(who, topic),
        }
    }

    fn decide_topic(&self, who: AclIdentity<'_>, topic: &str, publish: bool) -> bool {
        for rule in &self.rules {
            let wants = if publish {
                rule.publish
            } else {
                rule.subscribe
            };
            if wants && rule.who.applies(who) && matches(&rule.pattern, topic, who) {
                return rule.allow;
            }
        }
        self.default_allow && !topic.starts_with('$')
    }
}

impl Who {
    fn applies(&self, who: AclIdentity<'_>) -> bool {
        match self {
            Who::User(name) => who.username == Some(name.as_str()),
            Who::Client(id) => who.client_id == id,
            Who::Anonymous => who.username.is_none(),
            Who::Authenticated => who.username.is_some(),
            Who::Any => true,
        }
    }
}

fn parse_rule(line: &str) -> Result<Rule, String> {
    let (verb, rest) = next_field(line);
    let allow = match verb {
        "allow" => true,
        "deny" => false,
        other => return Err(format!("expected allow or deny, found {other:?}")),
    };
    let (kind, mut rest) = next_field(rest);
    let who = match kind {
        "user" | "client" => {
            let (name, after) = next_field(rest);
            rest = after;
            if name.is_empty() {
                return Err(format!("{kind} needs a name"));
            }
            if name.chars().any(char::is_control) {
                return Err(format!("{kind} name contains a control character"));
            }
            if kind == "user" {
                Who::User(name.to_owned())
            } else {
                Who::Client(name.to_owned())
            }
        }
        "anonymous" => Who::Anonymous,
        "authenticated" => Who::Authenticated,
        "any" => Who::Any,
        "" => return Err("expected user NAME, client ID, anonymous, authenticated or any".into()),
        other => {
            return Err(format!(
                "expected user, client, anonymous, authenticated or any, found {other:?}"
            ))
        }
    };
    let (action, rest) = next_field(rest);
    let (publish, subscribe) = match action {
        "publish" => (true, false),
        "subscribe" => (false, true),
        "all" => (true, true),
        "" => return Err("expected publish, subscribe or all".into()),
        other => {
            return Err(format!(
                "expected publish, subscribe or all, found {other:?}"
            ))
        }
    };
    // The rest of the line, so that topics with spaces can be written.
    let pattern = parse_pattern(rest.trim())?;
    Ok(Rule {
        allow,
        who,
        publish,
        subscribe,
        pattern,
    })
}

/// The first white-space separated field and the text after it.
fn next_field(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(end) => (&s[..end], &s[end..]),
        None => (s, ""),
    }
}

fn parse_pattern(raw: &str) -> Result<Vec<Level>, String> {
    if raw.is_empty() {
        return Err("expected a topic pattern".into());
    }
    if raw.chars().any(|c| c == '\0' || c.is_control()) {
        return Err("topic pattern contains a control character".into());
    }
    if raw.starts_with("$share/") {
        return Err(
            "rules apply to shared subscriptions without their $share/<group>/ prefix: write the filter alone"
                .into(),
        );
    }
    let parts: Vec<&str> = raw.split('/').collect();
    let mut levels = Vec::with_capacity(parts.len());
    for (i, level) in parts.iter().enumerate() {
        let parsed = match *level {
            "#" if i + 1 == parts.len() => Level::Multi,
            "#" => return Err("'#' must be the last level of a topic pattern".into()),
            "+" => Level::Single,
            l if l.contains(['#', '+']) => {
                return Err(format!(
                    "'+' and '#' must stand alone in their level, found {l:?}"
                ))
            }
            l => parse_level(l)?,
        };
        levels.push(parsed);
    }
    Ok(levels)
}

fn parse_level(level: &str) -> Result<Level, String> {
    if !level.contains('%') {
        return Ok(Level::Text(level.to_owned()));
    }
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut chars = level.chars();
    let mut templated = false;
    while let Some(c) = chars.next() {
        if c != '%' {
            text.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => text.push('%'),
            Some(p @ ('u' | 'c')) => {
                templated = true;
                if !text.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut text)));
                }
                parts.push(if p == 'u' { Part::User } else { Part::Client });
            }
            Some(other) => {
                return Err(format!(
                    "unknown substitution %{other} (use %u, %c, or %% for a %)"
                ))
            }
            None => return Err("a level ends with a lone % (use %% for a %)".into()),
        }
    }
    if !templated {
        return Ok(Level::Text(text));
    }
    if !text.is_empty() {
        parts.push(Part::Text(text));
    }
    Ok(Level::Template(parts))
}

/// True when `level` is exactly the template with `%u`/`%c` replaced: the values are compared
/// as text, never as wildcards. A `%u` template never matches an anonymous client.
fn template_eq(parts: &[Part], level: &str, who: AclIdentity<'_>) -> bool {
    let mut rest = level;
    for part in parts {
        let piece = match part {
            Part::Text(t) => t.as_str(),
            Part::User => match who.username {
                Some(u) => u,
                None => return false,
            },
            Part::Client => who.client_id,
        };
        match rest.strip_prefix(piece) {
            Some(r) => rest = r,
            None => return false,
        }
    }
    rest.is_empty()
}

/// True when the pattern matches the topic name, with MQTT's rule that wildcards in the first
/// level do not match topics starting with `$` [MQTT-4.7.2-1].
fn matches(pattern: &[Level], topic: &str, who: AclIdentity<'_>) -> bool {
    if topic.starts_with('$') && matches!(pattern.first(), Some(Level::Multi | Level::Single)) {
        return false;
    }
    let mut levels = topic.split('/');
    for (i, p) in pattern.iter().enumerate() {
        match p {
            // `a/#` matches `a` too.
            Level::Multi => return true,
            _ => {
                let Some(level) = levels.next() else {
                    return false;
                };
                let ok = match p {
                    Level::Single => true,
                    Level::Text(t) => t == level,
                    Level::Template(parts) => template_eq(parts, level, who),
                    Level::Multi => true,
                };
                if !ok {
                    return false;
                }
                if i + 1 == pattern.len() {
                    return levels.next().is_none();
                }
            }
        }
    }
    levels.next().is_none()
}

/// True when every topic the filter (split into levels) can match is matched by the pattern.
fn covers(pattern: &[Level], filter: &[&str], who: AclIdentity<'_>) -> bool {
    let dollar = filter.first().is_some_and(|f| f.starts_with('$'));
    if dollar && matches!(pattern.first(), Some(Level::Multi | Level::Single)) {
        // The pattern's first-level wildcard does not match the filter's `$` topics.
        return false;
    }
    covers_from(pattern, filter, who)
}

fn covers_from(pattern: &[Level], filter: &[&str], who: AclIdentity<'_>) -> bool {
    match (pattern.first(), filter.first()) {
        (Some(Level::Multi), _) => true,
        (None, None) => true,
        (None, Some(_)) | (Some(_), None) => false,
        (Some(p), Some(&f)) => {
            let level_ok = match p {
                Level::Multi => true,
                Level::Single => f != "#",
                Level::Text(t) => t == f,
                // A filter wildcard is never covered by a substituted value, whatever it is.
                Level::Template(parts) => f != "+" && f != "#" && template_eq(parts, f, who),
            };
            level_ok && covers_from(&pattern[1..], &filter[1..], who)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user<'a>(name: &'a str, client_id: &'a str) -> AclIdentity<'a> {
        AclIdentity {
            username: Some(name),
            client_id,
        }
    }

    fn anon(client_id: &str) -> AclIdentity<'_> {
        AclIdentity {
            username: None,
            client_id,
        }
    }

    fn acl(text: &str) -> Acl {
        Acl::parse(text, false).expect("valid ACL")
    }

    const EXAMPLE: &str = "\
# sensors publish their own readings, the dashboard reads them all
allow user sensor1 publish sensors/sensor1/#
allow user dashboard subscribe sensors/#
deny  any all sensors/secret/#
allow any subscribe sensors/+/temp
allow authenticated all users/%u/#
allow any all clients/%c
allow client gw-%c publish gw/%c
allow anonymous subscribe public/#
allow user admin subscribe $SYS/#
";

    #[test]
    fn first_match_wins_for_publish() {
        let acl = acl(EXAMPLE);
        assert!(acl.may_publish(user("sensor1", "s1"), "sensors/sensor1/temp"));
        assert!(acl.may_publish(user("sensor1", "s1"), "sensors/sensor1"));
        assert!(!acl.may_publish(user("sensor1", "s1"), "sensors/sensor2/temp"));
        assert!(!acl.may_publish(user("dashboard", "d"), "sensors/sensor1/temp"));
        // The deny comes before any allow for other clients.
        assert!(!acl.may_publish(user("x", "x"), "sensors/secret/a"));
    }

    #[test]
    fn receive_follows_subscribe_rules_with_deny_first() {
        let acl = acl(EXAMPLE);
        let d = user("dashboard", "d");
        assert!(acl.may_receive(d, "sensors/sensor1/temp"));
        // The dashboard's own allow comes first, so secret topics are not hidden from it...
        assert!(acl.may_receive(d, "sensors/secret/x"));
        // ...but from everybody else.
        assert!(!acl.may_receive(user("x", "x"), "sensors/secret/temp"));
        assert!(acl.may_receive(user("x", "x"), "sensors/a/temp"));
        assert!(!acl.may_receive(user("x", "x"), "sensors/a/humidity"));
    }

    #[test]
    fn subscribe_needs_a_covering_rule() {
        let acl = acl(EXAMPLE);
        let x = user("x", "x");
        assert!(acl.may_subscribe(x, "sensors/+/temp"));
        assert!(acl.may_subscribe(x, "sensors/a/temp"));
        // `sensors/+/temp` does not cover these.
        assert!(!acl.may_subscribe(x, "sensors/#"));
        assert!(!acl.may_subscribe(x, "sensors/+/+"));
        assert!(!acl.may_subscribe(x, "sensors/+"));
        assert!(!acl.may_subscribe(x, "#"));
        assert!(!acl.may_subscribe(x, "+/+/temp"));
        let d = user("dashboard", "d");
        assert!(acl.may_subscribe(d, "sensors/#"));
        assert!(acl.may_subscribe(d, "sensors"));
        assert!(acl.may_subscribe(d, "sensors/+/+/#"));
        assert!(!acl.may_subscribe(d, "#"));
        assert!(!acl.may_subscribe(d, "+/#"));
    }

    #[test]
    fn deny_covering_the_filter_refuses_it_overlap_does_not() {
        let acl = Acl::parse(
            "deny any subscribe a/secret/#\nallow any subscribe a/#\n",
            false,
        )
        .expect("valid");
        let x = user("x", "x");
        assert!(!acl.may_subscribe(x, "a/secret/#"));
        assert!(!acl.may_subscribe(x, "a/secret/b"));
        // Overlapping only: allowed, and the per-delivery check hides the secret topics.
        assert!(acl.may_subscribe(x, "a/#"));
        assert!(!acl.may_receive(x, "a/secret/b"));
        assert!(acl.may_receive(x, "a/open"));
    }

    #[test]
    fn user_substitution() {
        let acl = acl(EXAMPLE);
        assert!(acl.may_publish(user("alice", "c"), "users/alice/x"));
        assert!(acl.may_subscribe(user("alice", "c"), "users/alice/#"));
        assert!(!acl.may_publish(user("alice", "c"), "users/bob/x"));
        assert!(!acl.may_subscribe(user("alice", "c"), "users/+/x"));
        assert!(!acl.may_subscribe(user("alice", "c"), "users/#"));
        // A %u rule never applies to an anonymous client.
        assert!(!acl.may_publish(anon("alice"), "users/alice/x"));
    }

    #[test]
    fn substituted_values_never_widen_a_rule() {
        let acl = acl(EXAMPLE);
        // A user or client called like a wildcard, or with a '/', matches only itself.
        for name in ["+", "#", "a/b", "+/+"] {
            let who = user(name, name);
            assert!(!acl.may_publish(who, "users/x/y"), "{name}");
            assert!(!acl.may_subscribe(who, "users/+/y"), "{name}");
            assert!(!acl.may_subscribe(who, "users/#"), "{name}");
            assert!(!acl.may_subscribe(who, "clients/+"), "{name}");
            assert!(!acl.may_subscribe(who, "clients/#"), "{name}");
            assert!(!acl.may_receive(who, "clients/x"), "{name}");
        }
        assert!(!acl.may_publish(user("a/b", "a/b"), "clients/a/b"));
        assert!(!acl.may_publish(user("a/b", "a/b"), "users/a/b/c"));
    }

    #[test]
    fn client_substitution_and_client_rules() {
        let acl = acl(EXAMPLE);
        assert!(acl.may_publish(anon("c7"), "clients/c7"));
        assert!(!acl.may_publish(anon("c7"), "clients/c8"));
        // `client gw-%c` names the literal client id "gw-%c", not a pattern.
        assert!(!acl.may_publish(anon("gw-1"), "gw/gw-1"));
        let text = "allow client gw-1 publish gw/%c/status\n";
        let acl = Acl::parse(text, false).expect("valid");
        assert!(acl.may_publish(anon("gw-1"), "gw/gw-1/status"));
        assert!(!acl.may_publish(anon("gw-2"), "gw/gw-2/status"));
        let acl = Acl::parse("allow any publish dev/pre-%c-%u-post\n", false).expect("valid");
        assert!(acl.may_publish(user("u", "c"), "dev/pre-c-u-post"));
        assert!(!acl.may_publish(user("u", "c"), "dev/pre-c-u-postx"));
        assert!(!acl.may_publish(anon("c"), "dev/pre-c--post"));
        let acl = Acl::parse("allow any publish a/100%%/b\n", false).expect("valid");
        assert!(acl.may_publish(anon("c"), "a/100%/b"));
    }

    #[test]
    fn anonymous_and_authenticated() {
        let acl = acl(EXAMPLE);
        assert!(acl.may_subscribe(anon("c"), "public/#"));
        assert!(!acl.may_subscribe(user("u", "c"), "public/#"));
        assert!(!acl.may_publish(anon("c"), "public/x"));
    }

    #[test]
    fn dollar_topics_need_an_explicit_rule() {
        let allow_all = Acl::parse("allow any all #\nallow any all +/x\n", true).expect("valid");
        let x = user("x", "x");
        // Neither the default nor a pattern starting with a wildcard reaches $ topics.
        assert!(!allow_all.may_receive(x, "$SYS/broker/uptime"));
        assert!(!allow_all.may_subscribe(x, "$SYS/#"));
        assert!(!allow_all.may_subscribe(x, "$SYS/x"));
        assert!(!allow_all.may_receive(x, "$other/x"));
        assert!(allow_all.may_receive(x, "a/b"));
        let acl = acl(EXAMPLE);
        let admin = user("admin", "a");
        assert!(acl.may_subscribe(admin, "$SYS/#"));
        assert!(acl.may_subscribe(admin, "$SYS/broker/+"));
        assert!(acl.may_receive(admin, "$SYS/broker/uptime"));
        assert!(!acl.may_subscribe(user("dashboard", "d"), "$SYS/#"));
        // Nobody publishes to $SYS, whatever the rules.
        let open = Acl::parse("allow any all $SYS/#\n", true).expect("valid");
        assert!(!open.may_publish(admin, "$SYS/broker/uptime"));
        assert!(!open.may_publish(admin, "$SYS"));
        assert!(open.may_receive(admin, "$SYS/broker/uptime"));
    }

    #[test]
    fn default_applies_when_no_rule_does() {
        let allow = Acl::parse("deny user bob all #\n", true).expect("valid");
        assert!(allow.may_publish(user("alice", "a"), "a/b"));
        assert!(allow.may_subscribe(user("alice", "a"), "#"));
        assert!(!allow.may_publish(user("bob", "b"), "a/b"));
        assert!(!allow.may_subscribe(user("bob", "b"), "a/+"));
        let deny = Acl::parse("", false).expect("valid");
        assert!(deny.is_empty());
        assert!(!deny.may_publish(anon("c"), "a"));
        assert!(!deny.may_subscribe(anon("c"), "a"));
    }

    #[test]
    fn hash_pattern_matches_parent_level() {
        let acl = Acl::parse("allow any all a/#\nallow any all b/+\n", false).expect("valid");
        let x = anon("x");
        assert!(acl.may_publish(x, "a"));
        assert!(acl.may_publish(x, "a/b/c"));
        assert!(!acl.may_publish(x, "ab"));
        assert!(acl.may_publish(x, "b/c"));
        assert!(!acl.may_publish(x, "b"));
        assert!(!acl.may_publish(x, "b/c/d"));
        assert!(acl.may_subscribe(x, "b/+"));
        assert!(!acl.may_subscribe(x, "b/#"));
        assert!(acl.may_publish(x, "a/"));
    }

    #[test]
    fn errors_name_the_line_and_reason() {
        let cases = [
            ("allow", "expected user NAME"),
            ("permit any all a", "expected allow or deny"),
            ("allow user", "user needs a name"),
            ("allow user bob", "expected publish, subscribe or all"),
            ("allow user bob read a", "found \"read\""),
            ("allow any all", "expected a topic pattern"),
            ("allow any all a/#/b", "'#' must be the last level"),
            ("allow any all a/b#", "must stand alone"),
            ("allow any all a+/b", "must stand alone"),
            ("allow any all a/%x", "unknown substitution %x"),
            ("allow any all a/%", "lone %"),
            ("allow any all $share/g/a", "without their $share"),
            ("allow any all a\u{0}b", "control character"),
            ("allow everyone all a", "found \"everyone\""),
        ];
        for (line, reason) in cases {
            let text = format!("# header\n\nallow any all ok\n{line}\n");
            let err = Acl::parse(&text, true).expect_err(line);
            assert_eq!(err.line, 4, "{line}");
            assert!(err.reason.contains(reason), "{line}: {}", err.reason);
            assert!(err.to_string().starts_with("line 4: "), "{err}");
        }
    }

    #[test]
    fn hostile_lines_do_not_panic() {
        let long = "a/".repeat(40_000);
        let cases = [
            "\u{feff}allow any all a".to_string(),
            "allow any all ".to_string() + &"+/".repeat(1000) + "#",
            format!("allow any all {long}"),
            "deny user \u{1f600} all \u{1f600}/%u/%c".to_string(),
            "allow any all %%%%%u%c%%".to_string(),
            "allow\tany\tall\t/".to_string(),
        ];
        for text in &cases {
            if let Ok(acl) = Acl::parse(text, false) {
                let who = user("\u{1f600}", "%u");
                let _ = acl.may_publish(who, "a/b");
                let _ = acl.may_subscribe(who, "#");
                let _ = acl.may_receive(who, "/");
            }
        }
        let topics_with_spaces = Acl::parse("allow any all my topic/x y\n", false).expect("ok");
        assert!(topics_with_spaces.may_publish(anon("c"), "my topic/x y"));
        let slash = Acl::parse("allow any all /\n", false).expect("ok");
        assert!(slash.may_publish(anon("c"), "/"));
        assert!(!slash.may_publish(anon("c"), "/a"));
    }
}
