//! How a Messenger event reads in a Livechat room. Pure: an event in, the parts to post out.

use sha2::{Digest, Sha256};

use crate::ids::{MessageId, PageId, RoomId};
use crate::messenger::webhook::{Attachment, Event};

/// What to post in the room for one Messenger event, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    /// A text message; `quoting` is the `mid` of the Messenger message it answers, shown as a
    /// link to that message in the room (Rocket.Chat renders its own message links as quotes).
    Text {
        text: String,
        quoting: Option<String>,
    },
    /// A file to download from Meta and upload to the room; `fallback` is posted instead when
    /// that fails (with the reason appended).
    File {
        attachment: Attachment,
        fallback: String,
    },
}

/// The parts of an event, or `None` when the event is not relayed (echoes, reads, …).
pub fn parts(event: &Event) -> Option<Vec<Part>> {
    match event {
        Event::Message {
            text,
            attachments,
            quick_reply: _,
            reply_to,
            story_reply,
            ..
        } => {
            let mut parts = Vec::new();
            let mut lines = Vec::new();
            // The story's media must not be stored (`docs/instagram.md` §4.3): a link only.
            if let Some(url) = story_reply {
                lines.push(format!(
                    "{QUOTE_MARK} replying to your story (the link works while the story is up): {url}"
                ));
            }
            if let Some(text) = text.as_deref().filter(|t| !t.trim().is_empty()) {
                lines.push(text.to_owned());
            }
            let attachments = without_sticker_doubles(attachments);
            for attachment in attachments.iter().filter(|a| !a.is_file()) {
                lines.push(describe(attachment));
            }
            if !lines.is_empty() {
                parts.push(Part::Text {
                    text: lines.join("\n"),
                    quoting: reply_to.clone(),
                });
            }
            for attachment in attachments.iter().filter(|a| a.is_file()) {
                parts.push(Part::File {
                    attachment: attachment.clone(),
                    fallback: format!(
                        "[{}] {}",
                        attachment.kind,
                        attachment.url.as_deref().unwrap_or_default()
                    ),
                });
            }
            if parts.is_empty() {
                parts.push(text_part("[an empty message]"));
            }
            Some(parts)
        }
        Event::Postback { title, .. } => Some(vec![text_part(&format!("🔘 {title}"))]),
        Event::Edit { text, .. } => Some(vec![text_part(&format!("{text} _(edited)_"))]),
        // Shown as a line only where Rocket.Chat does not take the reaction itself.
        Event::Reaction { mid, emoji, react } => {
            let text = match (react, emoji) {
                (true, Some(emoji)) => format!("reacted {emoji}"),
                (true, None) => "reacted".to_owned(),
                (false, Some(emoji)) => format!("removed the {emoji} reaction"),
                (false, None) => "removed a reaction".to_owned(),
            };
            Some(vec![Part::Text {
                text,
                quoting: Some(mid.clone()),
            }])
        }
        Event::Deleted { mid } => Some(vec![Part::Text {
            text: UNSENT_NOTICE.to_owned(),
            quoting: Some(mid.clone()),
        }]),
        Event::Unsupported { .. } => Some(vec![text_part(
            "[the customer sent something Instagram does not show to apps; see it in the Instagram app]",
        )]),
        Event::Read { .. } | Event::Echo { .. } | Event::Other(_) => None,
    }
}

/// The line posted when an Instagram customer unsends a message.
pub const UNSENT_NOTICE: &str = "🗑️ _The customer unsent this message._";
/// What the unsent message's own text becomes in the room, where Rocket.Chat allows the edit.
pub const UNSENT_TEXT: &str = "🗑️ (unsent by the customer)";

fn text_part(text: &str) -> Part {
    Part::Text {
        text: text.to_owned(),
        quoting: None,
    }
}

/// The first line of a reply: a link to the quoted message, whose Rocket.Chat id is derived from
/// its `mid` like every relayed message's; `link` is that message's URL in the room.
pub fn quote_line(link: &str) -> String {
    format!("{QUOTE_MARK} [replying to an earlier message]({link})")
}

/// How a quote line starts, in both directions.
pub const QUOTE_MARK: &str = "↩️";

/// Until 30 August 2026 Meta sends a sticker as an `image` and a `sticker` attachment of the same
/// message (`docs/messenger.md` §2.6): the sticker is relayed once, as the image. A sticker
/// alone (as afterwards) is a file with a URL and is uploaded as an image itself.
fn without_sticker_doubles(attachments: &[Attachment]) -> Vec<Attachment> {
    let has_image = attachments.iter().any(|a| a.kind == "image");
    attachments
        .iter()
        .filter(|a| !(has_image && a.kind == "sticker"))
        .cloned()
        .collect()
}

/// The room's mark on a customer's message that came under `standby[]`: another app (the Page
/// Inbox or a bot) controlled the conversation in Messenger when it was written.
pub const STANDBY_LABEL: &str = "_(written while another app — the Page Inbox or a bot — handled this conversation in Messenger)_";

/// The same mark for an Instagram account's conversation, which the Instagram app's inbox or
/// another app can own (`docs/instagram.md` §4.10).
pub const INSTAGRAM_STANDBY_LABEL: &str = "_(written while another app — the Instagram inbox or a bot — handled this conversation on Instagram)_";

/// Marks the parts of a standby event: `label` heads its first text, or comes first.
pub fn mark_standby(parts: &mut Vec<Part>, label: &str) {
    match parts.first_mut() {
        Some(Part::Text { text, .. }) => *text = format!("{label}\n{text}"),
        _ => parts.insert(0, text_part(label)),
    }
}

/// Readable text for content that is not a file.
fn describe(attachment: &Attachment) -> String {
    let url = attachment.url.as_deref().unwrap_or_default();
    let title = attachment.title.as_deref().unwrap_or_default();
    match attachment.kind.as_str() {
        "sticker" => format!("[sticker] {url}").trim_end().to_owned(),
        "location" => match &attachment.coordinates {
            Some((lat, long)) => {
                let name = if title.is_empty() { "Location" } else { title };
                format!("📍 {name}: https://maps.google.com/?q={lat},{long}")
            }
            None => format!("📍 {title} {url}").trim_end().to_owned(),
        },
        "fallback" if url.is_empty() && title.is_empty() => {
            "[shared content that Messenger does not show to apps]".into()
        }
        "fallback" => format!("🔗 {title} {url}")
            .replace("  ", " ")
            .trim()
            .to_owned(),
        "reel" | "ig_reel" => format!("🎬 Reel: {title} {url}")
            .replace("  ", " ")
            .trim()
            .to_owned(),
        "post" | "ig_post" => format!("📰 Post: {title} {url}")
            .replace("  ", " ")
            .trim()
            .to_owned(),
        // Never downloaded: a story's media must not be stored (`docs/instagram.md` §4.3).
        "story_mention" => {
            format!("📣 mentioned you in their story (the link works for 24 hours): {url}")
                .trim_end_matches([' ', ':'])
                .to_owned()
        }
        "ephemeral" => {
            "[a disappearing photo or video; open the Instagram app to see it]".to_owned()
        }
        "share" => format!("🔗 Shared: {title} {url}")
            .replace("  ", " ")
            .trim()
            .to_owned(),
        other => format!("🔗 [{other}] {title} {url}")
            .replace("  ", " ")
            .trim()
            .to_owned(),
    }
}

/// The Rocket.Chat message id for part `index` of the event with this dedupe key in room `rid`:
/// derived, so a redelivery or a retry into the same room posts the same id and Rocket.Chat keeps
/// one copy. The room is part of it because a message `_id` is unique server-wide while 7.x
/// looks a visitor's message up only in the room it is asked for
/// (`findOneByRoomIdAndMessageId` in `apps/meteor/app/livechat/server/api/v1/message.ts`): a
/// retry that lands in a new room after the old one closed must not reuse the old room's id.
pub fn message_id(page: &PageId, rid: &RoomId, dedupe_key: &str, index: usize) -> MessageId {
    let digest = Sha256::digest(
        format!(
            "{}\u{0}{}\u{0}{dedupe_key}\u{0}{index}",
            page.as_str(),
            rid.as_str()
        )
        .as_bytes(),
    );
    MessageId::new(format!("fb{}", &hex::encode(digest)[..24]))
}

/// Whether `id` is one [`message_id`] derived: the gateway's own posts in a room (the customer's
/// messages and the page's replies written elsewhere), which must never travel back to Messenger.
pub fn is_derived_id(id: &MessageId) -> bool {
    let id = id.as_str();
    id.len() == 26
        && id.starts_with("fb")
        && id[2..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// How a reply the page sent from elsewhere (the Page Inbox / Business Suite, or another app)
/// reads in the room: the page's own words, labelled, so no one takes them for the customer's.
pub fn page_reply(
    page_name: &str,
    from_page_inbox: bool,
    text: Option<&str>,
    attachments: &[Attachment],
) -> String {
    let source = if from_page_inbox {
        "Page Inbox"
    } else {
        "another app"
    };
    let mut lines = vec![format!(
        "📘 *{page_name}* replied in Messenger (from the {source}):"
    )];
    if let Some(text) = text.filter(|t| !t.trim().is_empty()) {
        lines.push(
            text.lines()
                .map(|l| format!("> {l}"))
                .collect::<Vec<_>>()
                .join("\n"),
        );
    }
    for attachment in attachments {
        lines.push(match (&attachment.url, attachment.is_file()) {
            (Some(url), true) => format!("[{}] {url}", attachment.kind),
            _ => describe(attachment),
        });
    }
    lines.join("\n")
}

/// A file name for an upload: the last path segment of the URL when it has an extension,
/// otherwise one made from the kind and the content type.
pub fn file_name(url: &str, kind: &str, mime: &str) -> String {
    let from_url = url
        .split(['?', '#'])
        .next()
        .and_then(|path| path.rsplit('/').next())
        .filter(|name| name.contains('.') && name.len() <= 120)
        .map(str::to_owned);
    from_url.unwrap_or_else(|| {
        let extension = match mime {
            "image/jpeg" => "jpg",
            "image/png" => "png",
            "image/gif" => "gif",
            "image/webp" => "webp",
            "video/mp4" => "mp4",
            "audio/mpeg" => "mp3",
            "audio/mp4" | "audio/aac" => "m4a",
            "audio/ogg" => "ogg",
            "application/pdf" => "pdf",
            _ => "bin",
        };
        format!("{kind}.{extension}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attachment(kind: &str, url: Option<&str>, title: Option<&str>) -> Attachment {
        Attachment {
            kind: kind.into(),
            url: url.map(Into::into),
            title: title.map(Into::into),
            coordinates: None,
        }
    }

    fn message(text: Option<&str>, attachments: Vec<Attachment>, reply_to: Option<&str>) -> Event {
        Event::Message {
            mid: "m".into(),
            text: text.map(Into::into),
            attachments,
            quick_reply: false,
            reply_to: reply_to.map(Into::into),
            story_reply: None,
        }
    }

    #[test]
    fn every_kind_reads_as_text() {
        let mut location = attachment("location", None, Some("Office"));
        location.coordinates = Some(("52.5".into(), "13.4".into()));
        let cases = vec![
            (message(Some("hello"), vec![], None), vec!["hello"]),
            (
                message(Some("yes"), vec![], Some("m0")),
                vec!["yes (quoting m0)"],
            ),
            (
                message(
                    None,
                    vec![attachment("sticker", Some("https://cdn/s.png"), None)],
                    None,
                ),
                vec!["file"],
            ),
            (
                message(
                    None,
                    vec![
                        attachment("image", Some("https://cdn/s.png"), None),
                        attachment("sticker", Some("https://cdn/s.png"), None),
                    ],
                    None,
                ),
                vec!["file"],
            ),
            (
                message(None, vec![attachment("sticker", None, None)], None),
                vec!["[sticker]"],
            ),
            (
                message(
                    None,
                    vec![attachment("reel", Some("https://r"), Some("Our launch"))],
                    None,
                ),
                vec!["🎬 Reel: Our launch https://r"],
            ),
            (
                message(
                    None,
                    vec![attachment("ig_post", Some("https://p"), Some("A post"))],
                    None,
                ),
                vec!["📰 Post: A post https://p"],
            ),
            (
                message(None, vec![location], None),
                vec!["📍 Office: https://maps.google.com/?q=52.5,13.4"],
            ),
            (
                message(
                    Some("look"),
                    vec![attachment("fallback", Some("https://ex.com"), Some("Ex"))],
                    None,
                ),
                vec!["look\n🔗 Ex https://ex.com"],
            ),
            (
                message(None, vec![attachment("fallback", None, None)], None),
                vec!["[shared content that Messenger does not show to apps]"],
            ),
            (
                message(
                    None,
                    vec![attachment("appointment_booking", Some("https://r"), None)],
                    None,
                ),
                vec!["🔗 [appointment_booking] https://r"],
            ),
            (
                message(Some("  "), vec![], None),
                vec!["[an empty message]"],
            ),
            (
                Event::Postback {
                    mid: None,
                    title: "Talk to a person".into(),
                },
                vec!["🔘 Talk to a person"],
            ),
            (
                Event::Edit {
                    mid: "m".into(),
                    text: "fixed".into(),
                },
                vec!["fixed _(edited)_"],
            ),
            // Instagram (docs/instagram.md §4.2, §4.3, §4.8): story media is never a file.
            (
                message(
                    None,
                    vec![attachment("story_mention", Some("https://cdn/st"), None)],
                    None,
                ),
                vec![
                    "📣 mentioned you in their story (the link works for 24 hours): https://cdn/st",
                ],
            ),
            (
                message(None, vec![attachment("ephemeral", None, None)], None),
                vec!["[a disappearing photo or video; open the Instagram app to see it]"],
            ),
            (
                Event::Message {
                    mid: "m".into(),
                    text: Some("love it".into()),
                    attachments: vec![],
                    quick_reply: false,
                    reply_to: None,
                    story_reply: Some("https://cdn/story".into()),
                },
                vec![
                    "↩️ replying to your story (the link works while the story is up): https://cdn/story\nlove it",
                ],
            ),
            (
                Event::Deleted { mid: "m9".into() },
                vec!["🗑️ _The customer unsent this message._ (quoting m9)"],
            ),
            (
                Event::Unsupported { mid: "m8".into() },
                vec![
                    "[the customer sent something Instagram does not show to apps; see it in the Instagram app]",
                ],
            ),
        ];
        for (event, expected) in cases {
            let texts: Vec<String> = parts(&event)
                .expect("relayed")
                .into_iter()
                .map(|p| match p {
                    Part::Text {
                        text,
                        quoting: None,
                    } => text,
                    Part::Text {
                        text,
                        quoting: Some(mid),
                    } => format!("{text} (quoting {mid})"),
                    Part::File { .. } => "file".into(),
                })
                .collect();
            assert_eq!(texts, expected, "{event:?}");
        }
    }

    #[test]
    fn files_follow_the_text_in_order() {
        let event = message(
            Some("two photos"),
            vec![
                attachment("image", Some("https://cdn/a.jpg"), None),
                attachment("image", Some("https://cdn/b.jpg"), None),
            ],
            None,
        );
        let parts = parts(&event).expect("relayed");
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0], text_part("two photos"));
        assert!(
            matches!(&parts[2], Part::File { fallback, .. } if fallback == "[image] https://cdn/b.jpg")
        );
    }

    #[test]
    fn standby_is_marked_on_the_first_text_or_before_a_file() {
        let mut text = vec![text_part("hi")];
        mark_standby(&mut text, STANDBY_LABEL);
        assert_eq!(text, vec![text_part(&format!("{STANDBY_LABEL}\nhi"))]);
        let mut file = parts(&message(
            None,
            vec![attachment("image", Some("https://cdn/a.jpg"), None)],
            None,
        ))
        .expect("relayed");
        mark_standby(&mut file, INSTAGRAM_STANDBY_LABEL);
        assert_eq!(file.len(), 2);
        assert_eq!(file[0], text_part(INSTAGRAM_STANDBY_LABEL));
    }

    #[test]
    fn echoes_and_reads_are_not_relayed() {
        let echo = Event::Echo {
            app_id: None,
            mid: None,
            text: Some("hi".into()),
            attachments: vec![],
            metadata: None,
        };
        assert_eq!(parts(&echo), None);
        assert_eq!(parts(&Event::Other("read")), None);
    }

    #[test]
    fn derived_ids_are_recognised_and_meteor_ids_are_not() {
        assert!(is_derived_id(&message_id(
            &PageId::new("1"),
            &RoomId::new("r"),
            "e:m",
            0
        )));
        assert!(!is_derived_id(&MessageId::new("Zx4mQkJ8oP2bN7aRt")));
        assert!(!is_derived_id(&MessageId::new(
            "fbXXXXXXXXXXXXXXXXXXXXXXXX"
        )));
    }

    #[test]
    fn page_replies_are_labelled_quotes() {
        assert_eq!(
            page_reply("Acme", true, Some("We ship today.\nThanks!"), &[]),
            "📘 *Acme* replied in Messenger (from the Page Inbox):\n> We ship today.\n> Thanks!"
        );
        let photo = attachment("image", Some("https://cdn/p.jpg"), None);
        assert!(
            page_reply("Acme", false, None, &[photo])
                .ends_with("another app):\n[image] https://cdn/p.jpg")
        );
    }

    #[test]
    fn message_ids_are_stable_and_distinct() {
        let page = PageId::new("1");
        let rid = RoomId::new("r1");
        let a = message_id(&page, &rid, "m:abc", 0);
        assert_eq!(a, message_id(&page, &rid, "m:abc", 0));
        assert_ne!(a, message_id(&page, &rid, "m:abc", 1));
        assert_ne!(a, message_id(&PageId::new("2"), &rid, "m:abc", 0));
        assert_ne!(a, message_id(&page, &RoomId::new("r2"), "m:abc", 0));
        assert_eq!(a.as_str().len(), 26);
    }

    #[test]
    fn file_names() {
        let cases = [
            (
                "https://cdn.fbsbx.com/v/t59/photo_123.jpg?stp=dst&oh=x",
                "image",
                "image/jpeg",
                "photo_123.jpg",
            ),
            (
                "https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id=1",
                "image",
                "image/png",
                "image.png",
            ),
            ("https://cdn/x", "file", "application/zip", "file.bin"),
        ];
        for (url, kind, mime, expected) in cases {
            assert_eq!(file_name(url, kind, mime), expected, "{url}");
        }
    }
}
