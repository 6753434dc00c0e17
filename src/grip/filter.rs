//! GRIP filters (grip-spec §4.5), pure: what a subscription's filters make of a published item
//! (send it, drop it, rewrite its content, or fail), and of a hold's initial body.
//!
//! Filters are named per channel (`Grip-Channel: ch; filter=build-id`, the JSON instruct's
//! `filters`, a WebSocket `subscribe`); unknown names are ignored, as in Pushpin. The filters
//! read three maps, kept per hold in [`HoldFilters`]: the **subscription meta** (`Grip-Set-Meta`,
//! instruct `meta`, WebSocket `set-meta`), the **publish meta** of the item, and the hold's
//! **prev-ids** (each channel, as the backend named it, with the last id delivered on it, or
//! none).
//!
//! | filter | kind | does |
//! |---|---|---|
//! | `skip-self` | drop | drop when sub meta `user` is non-empty and equals pub meta `sender` |
//! | `skip-users` | drop | drop when `user` is non-empty and in pub meta `skip_users` (comma list, parts trimmed) |
//! | `require-sub` | drop | drop when pub meta `require_sub` is non-empty and not one of the hold's channels |
//! | `build-id` | content | `%I` → the id rendered from sub meta `id_format` (`%(channel)s` = that channel's prev-id), `id_encoding=hex` optional; `%(X)I` → X |
//! | `var-subst` | content | `%(name)s` → sub meta `name` |
//!
//! Content filters parse the content as Pushpin's `%` template language ([`render`]): `%%` is a
//! literal `%`, so a publisher escapes `%` on such channels, and a stray `%` is an error. Drop
//! filters are decided first; content filters then run in the channel's order. A published
//! format's `content-filters`, when present, must equal the channel's content filters exactly
//! (order included), or the item is skipped for that subscriber.
//!
//! Pushpin 1.36 behaviour followed: the channel's prev-id advances to the item's id before the
//! filters run (so `%I` renders the item's own id, which django-eventstream expects); initial
//! bodies (and next-link bodies) go through `build-id` only, with no prev-ids. Where 1.36 ends a
//! stream on a `content-filters` mismatch, tack skips the item for that subscriber (Pushpin
//! 1.41's rule: it is how one publish addresses one filter chain).

use bytes::Bytes;

/// One known filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    SkipSelf,
    SkipUsers,
    RequireSub,
    BuildId,
    VarSubst,
}

impl Filter {
    /// Every filter tack implements (each is advertised in `Grip-Feature`).
    pub const ALL: [Filter; 5] = [
        Filter::SkipSelf,
        Filter::SkipUsers,
        Filter::RequireSub,
        Filter::BuildId,
        Filter::VarSubst,
    ];

    /// The filter a name denotes; `None` for names tack (like Pushpin) ignores.
    pub fn parse(name: &str) -> Option<Filter> {
        Some(match name {
            "skip-self" => Filter::SkipSelf,
            "skip-users" => Filter::SkipUsers,
            "require-sub" => Filter::RequireSub,
            "build-id" => Filter::BuildId,
            "var-subst" => Filter::VarSubst,
            _ => return None,
        })
    }

    /// The name, as in `Grip-Channel` and `content-filters`.
    pub fn name(self) -> &'static str {
        match self {
            Filter::SkipSelf => "skip-self",
            Filter::SkipUsers => "skip-users",
            Filter::RequireSub => "require-sub",
            Filter::BuildId => "build-id",
            Filter::VarSubst => "var-subst",
        }
    }

    /// Whether it rewrites content (as opposed to deciding whether to send).
    pub fn is_content(self) -> bool {
        matches!(self, Filter::BuildId | Filter::VarSubst)
    }
}

/// The known filters among `names`, in order (unknown names dropped).
pub fn parse_filters(names: &[String]) -> Vec<Filter> {
    names.iter().filter_map(|n| Filter::parse(n)).collect()
}

/// What a hold does with one published item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Send the published bytes as they are (no content filter ran): the caller keeps its
    /// pre-rendered, shared frame.
    Unchanged,
    /// Send this content, which the content filters made.
    Send(Bytes),
    /// A drop filter said no (`skip-self`, `skip-users`, `require-sub`): not an error.
    Dropped,
    /// The item's `content-filters` do not match the channel's: not for this subscriber.
    Skipped,
    /// A content filter failed: Pushpin's message (`filter error: build-id: …`).
    Error(String),
}

/// One subscribed channel's filter state.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ChannelState {
    /// The name as subscribed (route prefix included).
    full: String,
    /// The name as the backend gave it (prefix removed): the prev-ids key.
    name: String,
    filters: Vec<Filter>,
    /// The last id delivered on the channel (the backend's `prev-id` at first); `None` when the
    /// channel was held without one (it then never gets one, as in Pushpin).
    prev_id: Option<String>,
}

/// The filter state of one hold or WebSocket session: its channels with their filters and
/// prev-ids, and the subscription meta. Kept only by holds that need it (see [`Self::needed`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HoldFilters {
    channels: Vec<ChannelState>,
    meta: Vec<(String, String)>,
}

impl HoldFilters {
    /// Whether a hold with these channels needs filter state at all: any channel with a known
    /// filter. Holds without one keep the shared-bytes fast path.
    pub fn needed(channels: &[super::ChannelSub]) -> bool {
        channels
            .iter()
            .any(|c| c.filters.iter().any(|f| Filter::parse(f).is_some()))
    }

    /// The state of a hold on `channels` (names as subscribed, `prefix` included) with `meta`.
    pub fn new(channels: &[super::ChannelSub], prefix: &str, meta: &[(String, String)]) -> Self {
        let mut f = HoldFilters::default();
        f.replace(channels, prefix, meta);
        f
    }

    /// A new instruction (a next link's answer) replaces channels, filters, prev-ids and meta.
    pub fn replace(
        &mut self,
        channels: &[super::ChannelSub],
        prefix: &str,
        meta: &[(String, String)],
    ) {
        self.channels = channels
            .iter()
            .map(|c| ChannelState {
                full: c.name.clone(),
                name: c.name.strip_prefix(prefix).unwrap_or(&c.name).to_string(),
                filters: parse_filters(&c.filters),
                prev_id: c.prev_id.clone(),
            })
            .collect();
        self.meta = meta.to_vec();
    }

    /// WebSocket `subscribe`: add (or re-filter) one channel; it has no prev-id.
    pub fn subscribe(&mut self, full: &str, name: &str, filters: &[String]) {
        let filters = parse_filters(filters);
        match self.channels.iter_mut().find(|c| c.full == full) {
            Some(c) => c.filters = filters,
            None => self.channels.push(ChannelState {
                full: full.to_string(),
                name: name.to_string(),
                filters,
                prev_id: None,
            }),
        }
    }

    /// WebSocket `unsubscribe`.
    pub fn unsubscribe(&mut self, full: &str) {
        self.channels.retain(|c| c.full != full);
    }

    /// WebSocket `set-meta`: set, or remove with `None`.
    pub fn set_meta(&mut self, name: &str, value: Option<&str>) {
        self.meta.retain(|(k, _)| k != name);
        if let Some(v) = value {
            self.meta.push((name.to_string(), v.to_string()));
        }
    }

    /// Whether a channel has `build-id` (initial bodies must then be parsed, not streamed).
    pub fn has_build_id(&self) -> bool {
        self.channels
            .iter()
            .any(|c| c.filters.contains(&Filter::BuildId))
    }

    /// Whether any channel has a filter (else the hold can use the fast path).
    pub fn any(&self) -> bool {
        self.channels.iter().any(|c| !c.filters.is_empty())
    }

    /// Decide on one item published to channel `full` (as subscribed) with `id`, publish
    /// `pub_meta` and its format's `content_filters`. The channel's prev-id advances to `id`
    /// first (when it has one), as in Pushpin 1.36.
    pub fn deliver(
        &mut self,
        full: &str,
        id: Option<&str>,
        pub_meta: &[(String, String)],
        content_filters: Option<&[String]>,
        content: &Bytes,
    ) -> Delivery {
        self.deliver_with(full, id, pub_meta, content_filters, content, &|_| false)
    }

    /// [`Self::deliver`] for a WebSocket session, whose channels without filters are not all
    /// known here: `subscribed(name)` (name as the backend gives it) answers `require-sub`
    /// for them.
    pub fn deliver_with(
        &mut self,
        full: &str,
        id: Option<&str>,
        pub_meta: &[(String, String)],
        content_filters: Option<&[String]>,
        content: &Bytes,
        subscribed: &dyn Fn(&str) -> bool,
    ) -> Delivery {
        let Some(at) = self.channels.iter().position(|c| c.full == full) else {
            return Delivery::Unchanged;
        };
        if let (Some(prev), Some(id)) = (self.channels[at].prev_id.as_mut(), id) {
            id.clone_into(prev);
        }
        let ch = &self.channels[at];
        if let Some(wanted) = content_filters {
            let have = ch.filters.iter().filter(|f| f.is_content());
            if !have.map(|f| f.name()).eq(wanted.iter().map(String::as_str)) {
                return Delivery::Skipped;
            }
        }
        let meta = |k: &str| lookup(&self.meta, k);
        let publish = |k: &str| lookup(pub_meta, k);
        for f in &ch.filters {
            let drop = match f {
                Filter::SkipSelf => {
                    let user = meta("user").unwrap_or("");
                    !user.is_empty() && publish("sender") == Some(user)
                }
                Filter::SkipUsers => {
                    let user = meta("user").unwrap_or("");
                    !user.is_empty()
                        && publish("skip_users")
                            .is_some_and(|l| l.split(',').map(str::trim).any(|u| u == user))
                }
                Filter::RequireSub => publish("require_sub").is_some_and(|r| {
                    !r.is_empty() && !self.channels.iter().any(|c| c.name == r) && !subscribed(r)
                }),
                Filter::BuildId | Filter::VarSubst => false,
            };
            if drop {
                return Delivery::Dropped;
            }
        }
        let mut current: Option<Vec<u8>> = None;
        for f in ch.filters.iter().filter(|f| f.is_content()) {
            let input: &[u8] = current.as_deref().unwrap_or(content);
            let out = match f {
                Filter::BuildId => build_id(input, &self.meta, Some(&self.channels)),
                _ => var_subst(input, &self.meta),
            };
            match out {
                Ok(v) => current = Some(v),
                Err(e) => return Delivery::Error(format!("filter error: {}: {e}", f.name())),
            }
        }
        match current {
            Some(v) => Delivery::Send(Bytes::from(v)),
            None => Delivery::Unchanged,
        }
    }

    /// An initial body (or a next link's body): `build-id` alone, when any channel has it, with
    /// the subscription meta and no prev-ids (so `%%` becomes `%` and `%I` fails). `Ok(None)`:
    /// the body is unchanged.
    pub fn initial_body(&self, body: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let build = self
            .channels
            .iter()
            .any(|c| c.filters.contains(&Filter::BuildId));
        if !build || body.is_empty() {
            return Ok(None);
        }
        build_id(body, &self.meta, None)
            .map(Some)
            .map_err(|e| format!("filter error: build-id: {e}"))
    }
}

fn lookup<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// `build-id`: `%I` is the id rendered from `id_format` with the channels' prev-ids (`None`:
/// no prev-ids at all, the initial-body case); `%(X)I` is X; hex-encoded with
/// `id_encoding=hex`.
fn build_id(
    content: &[u8],
    meta: &[(String, String)],
    channels: Option<&[ChannelState]>,
) -> Result<Vec<u8>, String> {
    let format = lookup(meta, "id_format").ok_or("no sub meta 'id_format'")?;
    let hex = match lookup(meta, "id_encoding") {
        None => false,
        Some("hex") => true,
        Some(other) => return Err(format!("unsupported encoding: {other}")),
    };
    let channels = channels.unwrap_or(&[]);
    let default_id = if channels.is_empty() {
        None
    } else {
        let vars = |name: &[u8]| {
            channels
                .iter()
                .find(|c| c.name.as_bytes() == name)
                .and_then(|c| c.prev_id.as_deref())
                .map(|v| v.as_bytes().to_vec())
        };
        Some(
            render(format.as_bytes(), &mut |d, arg, out| {
                string_var(d, arg, out, &vars)
            })
            .map_err(|e| format!("failed to render ID: {e}"))?,
        )
    };
    render(content, &mut |d, arg, out| {
        if d != b'I' {
            return Err(format!("Unknown directive '{}'", d as char));
        }
        let id = match arg {
            Some(a) => a,
            None => default_id
                .as_deref()
                .ok_or("No ID specified and no default ID in context")?,
        };
        if hex {
            for b in id {
                out.extend_from_slice(format!("{b:02x}").as_bytes());
            }
        } else {
            out.extend_from_slice(id);
        }
        Ok(())
    })
}

/// `var-subst`: `%(name)s` is the subscription meta value `name`.
fn var_subst(content: &[u8], meta: &[(String, String)]) -> Result<Vec<u8>, String> {
    let vars = |name: &[u8]| {
        meta.iter()
            .find(|(k, _)| k.as_bytes() == name)
            .map(|(_, v)| v.as_bytes().to_vec())
    };
    render(content, &mut |d, arg, out| string_var(d, arg, out, &vars))
}

/// The `s` directive: `%(name)s` is the variable `name`.
fn string_var(
    directive: u8,
    arg: Option<&[u8]>,
    out: &mut Vec<u8>,
    vars: &dyn Fn(&[u8]) -> Option<Vec<u8>>,
) -> Result<(), String> {
    if directive != b's' {
        return Err(format!("Unknown directive '{}'", directive as char));
    }
    let name = arg.ok_or("Directive 's' requires argument")?;
    let value = vars(name)
        .ok_or_else(|| format!("No such variable '{}'", String::from_utf8_lossy(name)))?;
    out.extend_from_slice(&value);
    Ok(())
}

/// Largest output of one filter run (16 MiB, well over any published item: their bodies are
/// bounded by `publish_body_bytes_max`, 1 MiB by default).
pub const RENDER_OUTPUT_MAX: usize = 16 << 20;

/// A directive handler: (directive byte, argument) → output appended, or an error message.
type Directive<'a> = dyn FnMut(u8, Option<&[u8]>, &mut Vec<u8>) -> Result<(), String> + 'a;

/// Pushpin's `%` template language (`Format::process`), all or nothing: `%%` is `%`;
/// `%(arg)X` calls directive X with `arg` (`\` escapes the next byte inside the parentheses;
/// `%()X` has no argument); `%X` with a letter X calls it with none; anything else after `%`
/// is an error. Errors carry Pushpin's text and the 0-based byte position.
pub fn render(input: &[u8], handler: &mut Directive<'_>) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        // tack: Pushpin has no bound; a few directives naming a large meta value could
        // otherwise make one delivery allocate without limit.
        if out.len() > RENDER_OUTPUT_MAX {
            return Err(format!("output over {RENDER_OUTPUT_MAX} bytes"));
        }
        let b = input[i];
        if b != b'%' {
            let next = input[i..]
                .iter()
                .position(|&c| c == b'%')
                .map_or(input.len(), |p| i + p);
            out.extend_from_slice(&input[i..next]);
            i = next;
            continue;
        }
        i += 1;
        let Some(&c) = input.get(i) else {
            return Err(format!(
                "Expected directive after '%' at position {}",
                i - 1
            ));
        };
        match c {
            b'%' => {
                out.push(b'%');
                i += 1;
            }
            b'(' => {
                let open = i;
                i += 1;
                if i >= input.len() {
                    return Err(format!("Expected character after '(' at position {open}"));
                }
                let mut arg = Vec::new();
                loop {
                    match input.get(i) {
                        None => {
                            return Err(format!("Unterminated field starting at position {open}"))
                        }
                        Some(b'\\') => {
                            let Some(&esc) = input.get(i + 1) else {
                                return Err(format!(
                                    "Expected character after '\\' at position {i}"
                                ));
                            };
                            arg.push(esc);
                            i += 2;
                        }
                        Some(b')') => break,
                        Some(&other) => {
                            arg.push(other);
                            i += 1;
                        }
                    }
                }
                let close = i;
                i += 1;
                let Some(&d) = input.get(i) else {
                    return Err(format!("Expected directive after ')' at position {close}"));
                };
                let arg = (!arg.is_empty()).then_some(arg.as_slice());
                handler(d, arg, &mut out).map_err(|e| format!("{e} at position {i}"))?;
                i += 1;
            }
            c if c.is_ascii_alphabetic() => {
                handler(c, None, &mut out).map_err(|e| format!("{e} at position {i}"))?;
                i += 1;
            }
            c => return Err(format!("Unknown directive '{}' at position {i}", c as char)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grip::ChannelSub;

    fn ch(name: &str, prev: Option<&str>, filters: &[&str]) -> ChannelSub {
        ChannelSub {
            name: name.into(),
            prev_id: prev.map(Into::into),
            filters: filters.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn meta(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn vars_render(input: &str, vars: &[(&str, &str)]) -> Result<String, String> {
        let m = meta(vars);
        var_subst(input.as_bytes(), &m).map(|v| String::from_utf8(v).unwrap())
    }

    #[test]
    fn template_language_matches_pushpin() {
        // Pushpin's own test vector (paraphrased): escapes inside the field, %% outside.
        assert_eq!(
            vars_render(
                r"My name is %(name)s and I eat %(food\\fruit(type\))s 10%% of the time",
                &[("name", "Alice"), (r"food\fruit(type)", "apples")]
            ),
            Ok("My name is Alice and I eat apples 10% of the time".into())
        );
        assert_eq!(
            vars_render("100%", &[]),
            Err("Expected directive after '%' at position 3".into())
        );
        assert_eq!(
            vars_render("a %1", &[]),
            Err("Unknown directive '1' at position 3".into())
        );
        assert_eq!(
            vars_render("%(", &[]),
            Err("Expected character after '(' at position 1".into())
        );
        assert_eq!(
            vars_render("%(ab", &[]),
            Err("Unterminated field starting at position 1".into())
        );
        assert_eq!(
            vars_render("%(a\\", &[]),
            Err("Expected character after '\\' at position 3".into())
        );
        assert_eq!(
            vars_render("%(a)", &[]),
            Err("Expected directive after ')' at position 3".into())
        );
        assert_eq!(
            vars_render("x%(u)s", &[]),
            Err("No such variable 'u' at position 5".into())
        );
        assert_eq!(
            vars_render("%()s", &[]),
            Err("Directive 's' requires argument at position 3".into())
        );
        assert_eq!(
            vars_render("%I", &[]),
            Err("Unknown directive 'I' at position 1".into())
        );
        assert_eq!(
            vars_render("no directives", &[]),
            Ok("no directives".into())
        );
    }

    #[test]
    fn build_id_renders_the_id_format_from_prev_ids() {
        let mut f = HoldFilters::new(
            &[
                ch("p-events-a", Some("5"), &["build-id"]),
                ch("p-events-b", Some("9"), &[]),
            ],
            "p-",
            &meta(&[("id_format", "a:%(events-a)s,b:%(events-b)s")]),
        );
        let c = Bytes::from_static(b"id: %I\ndata: 100%%\n\n");
        // The channel advances to the item's id before rendering (Pushpin 1.36).
        assert_eq!(
            f.deliver("p-events-a", Some("6"), &[], Some(&["build-id".into()]), &c),
            Delivery::Send(Bytes::from_static(b"id: a:6,b:9\ndata: 100%\n\n"))
        );
        assert_eq!(
            f.deliver(
                "p-events-a",
                None,
                &[],
                None,
                &Bytes::from_static(b"%(lit)I %I")
            ),
            Delivery::Send(Bytes::from_static(b"lit a:6,b:9"))
        );
        assert_eq!(
            f.deliver(
                "p-events-a",
                Some("7"),
                &[],
                None,
                &Bytes::from_static(b"50% off")
            ),
            Delivery::Error("filter error: build-id: Unknown directive ' ' at position 3".into())
        );
        f.set_meta("id_encoding", Some("hex"));
        assert_eq!(
            f.deliver(
                "p-events-a",
                None,
                &[],
                None,
                &Bytes::from_static(b"%(AB)I")
            ),
            Delivery::Send(Bytes::from_static(b"4142"))
        );
        f.set_meta("id_encoding", Some("b64"));
        assert_eq!(
            f.deliver("p-events-a", None, &[], None, &Bytes::from_static(b"x")),
            Delivery::Error("filter error: build-id: unsupported encoding: b64".into())
        );
        // A channel without a prev-id is no variable.
        let mut f = HoldFilters::new(
            &[ch("a", None, &["build-id"])],
            "",
            &meta(&[("id_format", "%(a)s")]),
        );
        assert_eq!(
            f.deliver("a", Some("1"), &[], None, &Bytes::from_static(b"%I")),
            Delivery::Error(
                "filter error: build-id: failed to render ID: No such variable 'a' at position 4"
                    .into()
            )
        );
        let mut f = HoldFilters::new(&[ch("a", Some("1"), &["build-id"])], "", &[]);
        assert_eq!(
            f.deliver("a", Some("2"), &[], None, &Bytes::from_static(b"plain")),
            Delivery::Error("filter error: build-id: no sub meta 'id_format'".into())
        );
    }

    #[test]
    fn drop_filters_read_sub_and_publish_meta() {
        let chans = [
            ch("events-a", Some("1"), &["skip-users", "skip-self"]),
            ch("user-bob", None, &["require-sub"]),
        ];
        let mut f = HoldFilters::new(&chans, "", &meta(&[("user", "bob")]));
        let c = Bytes::from_static(b"hi");
        let send = Delivery::Unchanged;
        assert_eq!(
            f.deliver(
                "events-a",
                Some("2"),
                &meta(&[("skip_users", "al, bob ,")]),
                None,
                &c
            ),
            Delivery::Dropped
        );
        assert_eq!(
            f.deliver(
                "events-a",
                Some("3"),
                &meta(&[("skip_users", "al,bobby")]),
                None,
                &c
            ),
            send
        );
        assert_eq!(
            f.deliver("events-a", Some("4"), &meta(&[("sender", "bob")]), None, &c),
            Delivery::Dropped
        );
        assert_eq!(
            f.deliver("events-a", Some("5"), &meta(&[("sender", "al")]), None, &c),
            send
        );
        assert_eq!(
            f.deliver(
                "user-bob",
                None,
                &meta(&[("require_sub", "events-a")]),
                None,
                &c
            ),
            send
        );
        assert_eq!(
            f.deliver(
                "user-bob",
                None,
                &meta(&[("require_sub", "events-z")]),
                None,
                &c
            ),
            Delivery::Dropped
        );
        // No user: skip-self and skip-users never drop.
        let mut anon = HoldFilters::new(&chans, "", &[]);
        assert_eq!(
            anon.deliver(
                "events-a",
                None,
                &meta(&[("sender", ""), ("skip_users", "")]),
                None,
                &c
            ),
            send
        );
        // Unknown channels and unfiltered channels pass the bytes through untouched.
        assert!(f.deliver("other", None, &[], None, &c) == Delivery::Unchanged);
    }

    #[test]
    fn content_filters_must_match_exactly_and_var_subst_chains() {
        let mut f = HoldFilters::new(
            &[ch(
                "c",
                Some("1"),
                &["build-id", "skip-self", "var-subst", "frob"],
            )],
            "",
            &meta(&[("id_format", "%(c)s"), ("user", "al")]),
        );
        let c = Bytes::from_static(b"%I %%(user)s");
        let want = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            f.deliver("c", Some("2"), &[], Some(&want(&["var-subst"])), &c),
            Delivery::Skipped
        );
        assert_eq!(
            f.deliver("c", Some("2"), &[], Some(&want(&[])), &c),
            Delivery::Skipped
        );
        assert_eq!(
            f.deliver(
                "c",
                Some("2"),
                &[],
                Some(&want(&["build-id", "var-subst"])),
                &c
            ),
            Delivery::Send(Bytes::from_static(b"2 al"))
        );
        assert!(!HoldFilters::needed(&[ch("c", None, &["frob"])]));
        assert!(HoldFilters::needed(&[ch(
            "c",
            None,
            &["frob", "skip-self"]
        )]));
    }

    #[test]
    fn initial_bodies_get_build_id_without_prev_ids() {
        let f = HoldFilters::new(
            &[ch("c", Some("1"), &["build-id"])],
            "",
            &meta(&[("id_format", "%(c)s")]),
        );
        assert_eq!(
            f.initial_body(b"data: 5%%\n\n"),
            Ok(Some(b"data: 5%\n\n".to_vec()))
        );
        assert_eq!(
            f.initial_body(b"id: %I\n"),
            Err("filter error: build-id: No ID specified and no default ID in context at position 5".into())
        );
        let plain = HoldFilters::new(&[ch("c", None, &["skip-self"])], "", &[]);
        assert_eq!(plain.initial_body(b"5%"), Ok(None));
    }

    #[test]
    fn filter_output_is_bounded() {
        let big = "x".repeat(1 << 20);
        let m = meta(&[("v", big.as_str())]);
        let input = "%(v)s".repeat(20);
        assert_eq!(
            var_subst(input.as_bytes(), &m),
            Err(format!("output over {RENDER_OUTPUT_MAX} bytes"))
        );
    }

    #[test]
    fn websocket_channels_come_and_go() {
        let mut f = HoldFilters::default();
        f.set_meta("user", Some("al"));
        f.subscribe("p-x", "x", &["skip-self".into()]);
        let c = Bytes::from_static(b"m");
        assert_eq!(
            f.deliver("p-x", None, &meta(&[("sender", "al")]), None, &c),
            Delivery::Dropped
        );
        f.set_meta("user", None);
        assert_eq!(
            f.deliver("p-x", None, &meta(&[("sender", "al")]), None, &c),
            Delivery::Unchanged
        );
        f.unsubscribe("p-x");
        assert!(!f.any());
    }
}
