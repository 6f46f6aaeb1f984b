//! How an agent's Rocket.Chat message reads in Messenger. Pure: the stored `msg` in, the text to
//! send out.
//!
//! Rocket.Chat keeps a message as the agent typed it and renders it only in its own clients, so
//! what the relay reads from the room is markup, not what the agent saw. Messenger shows text as
//! sent. Each rule below turns one piece of Rocket.Chat markup into what the agent meant:
//!
//! - **Emoji shortcodes** (`:thumbsup:`, `:wave_tone3:`) become Unicode emoji: Rocket.Chat's
//!   emoji picker inserts the shortcode, not the character, so an agent who picked 👍 would
//!   otherwise send the customer the word `:thumbsup:`. Names are looked up as Rocket.Chat names
//!   them (JoyPixels/EmojiOne names with `_tone1`…`_tone5` skin tones and `flag_xx` flags), then
//!   as GitHub and Slack name them (gemoji, with Slack's `:skin-tone-2:`…`:skin-tone-6:`
//!   suffix), since agents also type names they know from those apps. A name nobody defines
//!   stays as typed, and a colon right after a letter or digit never opens a shortcode, so
//!   `10:30:45` and `ratio 1:100:5` are left alone.
//! - **Links** `[text](url)` and `<url|text>` (both forms of Rocket.Chat's message parser,
//!   `packages/message-parser/src/grammar.pegjs`, rule `References`) become `text (url)`: Messenger
//!   does not render link markup, and the customer needs the address to follow it. A link whose
//!   text is empty or the address itself becomes the bare address; an image `![alt](url)` reads
//!   like a link. Addresses are never touched by the other rules (a `@` or `:` in a URL stays).
//! - **Quotes**: Rocket.Chat's clients write a quote as a blank link to the quoted message put
//!   before the reply (`[ ](https://chat.example/live/<room>?msg=<id>) reply`); the server turns
//!   it into a quote attachment. The marker is dropped: the quote itself is relayed as a reply,
//!   and an address inside the agents' Rocket.Chat is useless to the customer.
//! - **Mentions**: `@here` and `@all` notify the agents of the room and mean nothing to the
//!   customer, so they are dropped; `@username` becomes the plain name, since the customer cannot
//!   open a Rocket.Chat profile but should still read whom the agent means. An `@` after a letter
//!   or digit is an e-mail address, not a mention.
//! - **Code** (fenced blocks and inline code) keeps its content exactly, with the fences and
//!   backticks removed: Messenger does not render them, and what an agent pastes as code (a
//!   command, an order number with colons) must reach the customer character for character.
//! - **Emphasis** `*bold*`, `_italic_`, `~strike~` is left as typed: Messenger users write the
//!   same marks themselves, so they read naturally there.

use std::sync::LazyLock;

use emojis::{Emoji, SkinTone};
use regex::{Captures, Regex};

/// Turns an agent's Rocket.Chat message text into the text the customer sees in Messenger.
pub fn to_messenger(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    let text = without_leading_quotes(text);
    for caps in VERBATIM.captures_iter(text) {
        let whole = caps.get_match();
        plain(&text[last..whole.start()], &mut out);
        verbatim(&caps, &mut out);
        last = whole.end();
    }
    plain(&text[last..], &mut out);
    out
}

/// The spans no text rule may change: code, links and bare addresses.
static VERBATIM: LazyLock<Regex> = LazyLock::new(|| {
    // A literal pattern: it compiles, so this cannot panic (the unit tests force it).
    Regex::new(concat!(
        r"(?s)```(?:[A-Za-z0-9_+\-]*\n)?(?P<fence>.*?)\n?```",
        r"|`(?P<code>[^`\n]+)`",
        r"|!?\[(?P<text>[^\]\n]*)\]\((?P<href>[^)\s]+)\)",
        r"|<(?P<ahref>[^|>\s]+)\|(?P<atext>[^>\n]+)>",
        r"|(?P<url>(?:https?|ftp)://[^\s<>]+|mailto:[^\s<>]+)",
    ))
    .expect("literal regex compiles")
});

/// A shortcode at the start of the text, with Slack's optional skin tone suffix.
static SHORTCODE: LazyLock<Regex> = LazyLock::new(|| {
    // A literal pattern: it compiles, so this cannot panic (the unit tests force it).
    Regex::new(r"^:(?P<name>[a-z0-9_+\-]+):(?::skin-tone-(?P<tone>[2-6]):)?")
        .expect("literal regex compiles")
});

/// A mention at the start of the text. Rocket.Chat's default username pattern (setting
/// `UTF8_User_Names_Validation`) is `[0-9a-zA-Z-_.]+`.
static MENTION: LazyLock<Regex> = LazyLock::new(|| {
    // A literal pattern: it compiles, so this cannot panic (the unit tests force it).
    Regex::new(r"^@(?P<name>[0-9A-Za-z_.\-]+)").expect("literal regex compiles")
});

fn verbatim(caps: &Captures<'_>, out: &mut String) {
    if let Some(code) = caps.name("fence").or_else(|| caps.name("code")) {
        out.push_str(code.as_str());
    } else if let Some(href) = caps.name("href").or_else(|| caps.name("ahref")) {
        let text = caps
            .name("text")
            .or_else(|| caps.name("atext"))
            .map_or("", |t| t.as_str().trim());
        if text.is_empty() && is_quote_marker(href.as_str()) {
            // Rocket.Chat writes a quote as a blank link to the quoted message; the relay
            // answers the quote itself, and the room's address means nothing to the customer.
            return;
        }
        if text.is_empty() || text == href.as_str() {
            out.push_str(href.as_str());
        } else {
            plain(text, out);
            out.push_str(" (");
            out.push_str(href.as_str());
            out.push(')');
        }
    } else {
        out.push_str(caps.get_match().as_str());
    }
}

/// A blank link at the start of the text, as Rocket.Chat's clients write a quote.
static LEADING_QUOTE: LazyLock<Regex> = LazyLock::new(|| {
    // A literal pattern: it compiles, so this cannot panic (the unit tests force it).
    Regex::new(r"^\s*\[\s*\]\((?P<href>[^)\s]+)\)\s*").expect("literal regex compiles")
});

/// The text after the quote markers Rocket.Chat's web client puts first, one per quoted message
/// and separated by spaces (`apps/meteor/client/lib/utils/prependReplies.ts`).
fn without_leading_quotes(mut text: &str) -> &str {
    while let Some(caps) = LEADING_QUOTE.captures(text) {
        if !caps
            .name("href")
            .is_some_and(|h| is_quote_marker(h.as_str()))
        {
            break;
        }
        text = &text[caps.get_match().end()..];
    }
    text
}

/// A permalink to a Rocket.Chat message: its query names the message (`?msg=<id>`).
fn is_quote_marker(href: &str) -> bool {
    href.split_once('?')
        .is_some_and(|(_, query)| query.split('&').any(|pair| pair.starts_with("msg=")))
}

/// Applies the shortcode and mention rules to text outside code and links.
fn plain(text: &str, out: &mut String) {
    let mut i = 0;
    while let Some(c) = text[i..].chars().next() {
        let rest = &text[i..];
        // A word character right before `:` or `@` makes it a time, a ratio or an e-mail.
        let boundary = text[..i]
            .chars()
            .next_back()
            .is_none_or(|p| !(p.is_alphanumeric() || p == '_'));
        if boundary && c == ':' {
            if let Some((emoji, len)) = shortcode(rest) {
                out.push_str(emoji);
                i += len;
                continue;
            }
        }
        if boundary && c == '@' {
            if let Some(len) = mention(rest, out) {
                i += len;
                continue;
            }
        }
        out.push(c);
        i += c.len_utf8();
    }
}

/// The Unicode emoji of a reaction's name as Rocket.Chat stores it (`:thumbsup:`,
/// `:wave_tone3:`); `None` for a name that is not a standard emoji (a server's custom emoji).
pub fn reaction_emoji(name: &str) -> Option<&'static str> {
    let (emoji, len) = shortcode(name)?;
    (len == name.len()).then_some(emoji)
}

/// The name Rocket.Chat's emoji picker gives an emoji (without colons), for a reaction: a
/// reaction is stored under its name, and the server also accepts JoyPixels' alternate names
/// (`:+1:`) but keeps them as a different key, so an agent would see two 👍 if the gateway used
/// another name than the picker. Skin tones become `_tone1`…`_tone5`. `None` for an emoji that
/// has no name here (Rocket.Chat refuses unknown names).
pub fn to_rocketchat_name(emoji: &str) -> Option<String> {
    let bare = emoji.trim_end_matches('\u{FE0F}');
    let found = emojis::get(emoji)
        .or_else(|| emojis::get(bare))
        .or_else(|| emojis::get(&format!("{bare}\u{FE0F}")))?;
    let tone = found.skin_tone().filter(|t| *t != SkinTone::Default);
    let base = found.with_skin_tone(SkinTone::Default).unwrap_or(found);
    let name = PICKER_PREFERRED
        .iter()
        .find(|(_, gemoji)| base.shortcodes().any(|s| s == *gemoji))
        .map(|(picker, _)| (*picker).to_owned())
        .or_else(|| {
            ROCKETCHAT_NAMES
                .iter()
                .find(|(_, gemoji)| base.shortcodes().any(|s| s == *gemoji))
                .map(|(rc, _)| (*rc).to_owned())
        })
        .or_else(|| {
            // gemoji's own name, where Rocket.Chat reads it as the same emoji.
            base.shortcodes()
                .find(|s| lookup_base(s).is_some_and(|e| e == base))
                .map(str::to_owned)
        })?;
    Some(match tone.and_then(rocketchat_tone_number) {
        Some(n) => format!("{name}_tone{n}"),
        None => name,
    })
}

/// Emoji whose first gemoji name is one of JoyPixels' alternates, not the picker's name:
/// (picker name, a gemoji name of the same emoji).
const PICKER_PREFERRED: &[(&str, &str)] = &[
    ("thumbsup", "+1"),
    ("thumbsdown", "-1"),
    ("punch", "fist_oncoming"),
    ("raised_hand", "hand"),
    ("poop", "hankey"),
];

/// The number of Rocket.Chat's `_toneN` suffix.
fn rocketchat_tone_number(tone: SkinTone) -> Option<u8> {
    Some(match tone {
        SkinTone::Light => 1,
        SkinTone::MediumLight => 2,
        SkinTone::Medium => 3,
        SkinTone::MediumDark => 4,
        SkinTone::Dark => 5,
        _ => return None,
    })
}

/// The emoji for the shortcode at the start of `rest`, and how many bytes it spans.
fn shortcode(rest: &str) -> Option<(&'static str, usize)> {
    let caps = SHORTCODE.captures(rest)?;
    let name = caps.name("name")?.as_str();
    let emoji = lookup(name)?;
    let toned = caps
        .name("tone")
        .and_then(|t| slack_tone(t.as_str()))
        .and_then(|tone| emoji.with_skin_tone(tone));
    match toned {
        Some(toned) => Some((toned.as_str(), caps.get_match().len())),
        // Without a tone, or with one this emoji cannot take: the suffix stays as typed.
        None => Some((emoji.as_str(), name.len() + 2)),
    }
}

/// Resolves a shortcode name: Rocket.Chat's skin tone suffix, then the name itself.
fn lookup(name: &str) -> Option<&'static Emoji> {
    if let Some((base, tone)) = name.rsplit_once("_tone") {
        if let Some(tone) = rocketchat_tone(tone) {
            return lookup_base(base)?.with_skin_tone(tone);
        }
    }
    lookup_base(name)
}

/// Rocket.Chat's name first (where it differs from gemoji), then gemoji's, then a flag.
fn lookup_base(name: &str) -> Option<&'static Emoji> {
    match ROCKETCHAT_NAMES.binary_search_by_key(&name, |(rc, _)| rc) {
        Ok(i) => emojis::get_by_shortcode(ROCKETCHAT_NAMES[i].1),
        Err(_) => emojis::get_by_shortcode(name).or_else(|| flag(name)),
    }
}

/// Rocket.Chat names country flags `flag_<ISO 3166 code>`; the emoji is the code's two
/// regional indicator letters.
fn flag(name: &str) -> Option<&'static Emoji> {
    let code = name.strip_prefix("flag_")?;
    if code.len() != 2 || !code.bytes().all(|b| b.is_ascii_lowercase()) {
        return None;
    }
    let letters: String = code
        .bytes()
        .filter_map(|b| char::from_u32(0x1F1E6 + u32::from(b - b'a')))
        .collect();
    emojis::get(&letters)
}

/// Rocket.Chat's `_tone1` (lightest) … `_tone5` (darkest).
fn rocketchat_tone(n: &str) -> Option<SkinTone> {
    Some(match n {
        "1" => SkinTone::Light,
        "2" => SkinTone::MediumLight,
        "3" => SkinTone::Medium,
        "4" => SkinTone::MediumDark,
        "5" => SkinTone::Dark,
        _ => return None,
    })
}

/// Slack's `:skin-tone-2:` (lightest, Fitzpatrick types 1–2) … `:skin-tone-6:` (darkest).
fn slack_tone(n: &str) -> Option<SkinTone> {
    Some(match n {
        "2" => SkinTone::Light,
        "3" => SkinTone::MediumLight,
        "4" => SkinTone::Medium,
        "5" => SkinTone::MediumDark,
        "6" => SkinTone::Dark,
        _ => return None,
    })
}

/// Handles the mention at the start of `rest`; returns how many bytes it consumed.
fn mention(rest: &str, out: &mut String) -> Option<usize> {
    let caps = MENTION.captures(rest)?;
    // A sentence may end right after a name: "thanks @bob." keeps its full stop.
    let name = caps.name("name")?.as_str().trim_end_matches(['.', '-']);
    if name.is_empty() {
        return None;
    }
    let mut len = name.len() + 1;
    if name == "here" || name == "all" {
        // Dropped with the punctuation and space that went with it, so no gap is left.
        let after = &rest[len..];
        let after = after.strip_prefix([',', ':']).unwrap_or(after);
        if let Some(spaced) = after.strip_prefix(' ') {
            len = rest.len() - spaced.len();
        } else {
            len = rest.len() - after.len();
            if out.is_empty() || out.ends_with('\n') {
                // The mention was the whole line: the line goes too.
                if after.starts_with('\n') {
                    len += 1;
                }
            } else if (after.is_empty() || after.starts_with('\n')) && out.ends_with(' ') {
                out.pop();
            }
        }
    } else {
        out.push_str(name);
    }
    Some(len)
}

/// The names Rocket.Chat's emoji picker inserts that gemoji spells differently (or, for
/// `beach_umbrella`, gives to another emoji), mapped to gemoji's name for the same emoji. The
/// picker's names are listed in Rocket.Chat's `apps/meteor/app/emoji-emojione/lib/emojiPicker.ts`
/// (generated from the JoyPixels/EmojiOne data). Sorted by the Rocket.Chat name.
const ROCKETCHAT_NAMES: &[(&str, &str)] = &[
    ("airplane_small", "small_airplane"),
    ("anger_right", "right_anger_bubble"),
    ("beach", "beach_umbrella"),
    ("beach_umbrella", "parasol_on_ground"),
    ("bellhop", "bellhop_bell"),
    ("blond-haired_man", "blond_haired_man"),
    ("blond-haired_woman", "blond_haired_woman"),
    ("calendar_spiral", "spiral_calendar"),
    ("call_me", "call_me_hand"),
    ("card_box", "card_file_box"),
    ("champagne_glass", "clinking_glasses"),
    ("cloud_lightning", "cloud_with_lightning"),
    ("cloud_rain", "cloud_with_rain"),
    ("cloud_snow", "cloud_with_snow"),
    ("cloud_tornado", "tornado"),
    ("clown", "clown_face"),
    ("construction_site", "building_construction"),
    ("couch", "couch_and_lamp"),
    ("couple_mm", "couple_with_heart_man_man"),
    ("couple_ww", "couple_with_heart_woman_woman"),
    ("cowboy", "cowboy_hat_face"),
    ("cross", "latin_cross"),
    ("cruise_ship", "passenger_ship"),
    ("desktop", "desktop_computer"),
    ("dividers", "card_index_dividers"),
    ("face_vomiting", "vomiting_face"),
    ("face_with_hand_over_mouth", "hand_over_mouth"),
    ("face_with_monocle", "monocle_face"),
    ("face_with_raised_eyebrow", "raised_eyebrow"),
    ("face_with_symbols_over_mouth", "cursing_face"),
    ("family_mmb", "family_man_man_boy"),
    ("family_mmbb", "family_man_man_boy_boy"),
    ("family_mmg", "family_man_man_girl"),
    ("family_mmgb", "family_man_man_girl_boy"),
    ("family_mmgg", "family_man_man_girl_girl"),
    ("family_mwbb", "family_man_woman_boy_boy"),
    ("family_mwg", "family_man_woman_girl"),
    ("family_mwgb", "family_man_woman_girl_boy"),
    ("family_mwgg", "family_man_woman_girl_girl"),
    ("family_wwb", "family_woman_woman_boy"),
    ("family_wwbb", "family_woman_woman_boy_boy"),
    ("family_wwg", "family_woman_woman_girl"),
    ("family_wwgb", "family_woman_woman_girl_boy"),
    ("family_wwgg", "family_woman_woman_girl_girl"),
    ("fingers_crossed", "crossed_fingers"),
    ("first_place", "1st_place_medal"),
    ("flag_black", "black_flag"),
    ("flag_white", "white_flag"),
    ("fork_knife_plate", "plate_with_cutlery"),
    ("frame_photo", "framed_picture"),
    ("french_bread", "baguette_bread"),
    ("frowning2", "frowning_face"),
    ("hammer_pick", "hammer_and_pick"),
    ("hand_splayed", "raised_hand_with_fingers_splayed"),
    ("head_bandage", "face_with_head_bandage"),
    ("heart_exclamation", "heavy_heart_exclamation"),
    ("hockey", "ice_hockey"),
    ("homes", "houses"),
    ("house_abandoned", "derelict_house"),
    ("hugging", "hugs"),
    ("island", "desert_island"),
    ("key2", "old_key"),
    ("kiss_mm", "couplekiss_man_man"),
    ("kiss_woman_man", "couplekiss_man_woman"),
    ("kiss_ww", "couplekiss_woman_woman"),
    ("left_facing_fist", "fist_left"),
    ("levitate", "business_suit_levitating"),
    ("lion_face", "lion"),
    ("man_bald", "bald_man"),
    ("man_bowing", "bowing_man"),
    ("man_construction_worker", "construction_worker_man"),
    ("man_curly_haired", "curly_haired_man"),
    ("man_detective", "male_detective"),
    ("man_elf", "elf_man"),
    ("man_fairy", "fairy_man"),
    ("man_frowning", "frowning_man"),
    ("man_genie", "genie_man"),
    ("man_gesturing_no", "no_good_man"),
    ("man_gesturing_ok", "ok_man"),
    ("man_getting_face_massage", "massage_man"),
    ("man_getting_haircut", "haircut_man"),
    ("man_guard", "guardsman"),
    ("man_in_steamy_room", "sauna_man"),
    ("man_mage", "mage_man"),
    ("man_police_officer", "policeman"),
    ("man_pouting", "pouting_man"),
    ("man_raising_hand", "raising_hand_man"),
    ("man_red_haired", "red_haired_man"),
    ("man_running", "running_man"),
    ("man_superhero", "superhero_man"),
    ("man_supervillain", "supervillain_man"),
    ("man_tipping_hand", "tipping_hand_man"),
    ("man_vampire", "vampire_man"),
    ("man_walking", "walking_man"),
    ("man_wearing_turban", "man_with_turban"),
    ("man_white_haired", "white_haired_man"),
    ("man_with_chinese_cap", "man_with_gua_pi_mao"),
    ("man_zombie", "zombie_man"),
    ("map", "world_map"),
    ("medal", "medal_sports"),
    ("men_with_bunny_ears_partying", "dancing_men"),
    ("microphone2", "studio_microphone"),
    ("military_medal", "medal_military"),
    ("money_mouth", "money_mouth_face"),
    ("motorboat", "motor_boat"),
    ("mouse_three_button", "computer_mouse"),
    ("nerd", "nerd_face"),
    ("newspaper2", "newspaper_roll"),
    ("notepad_spiral", "spiral_notepad"),
    ("oil", "oil_drum"),
    ("om_symbol", "om"),
    ("park", "national_park"),
    ("peace", "peace_symbol"),
    ("pen_ballpoint", "pen"),
    ("pen_fountain", "fountain_pen"),
    ("people_with_bunny_ears_partying", "dancers"),
    ("person_bowing", "bow"),
    ("person_facepalming", "facepalm"),
    ("person_frowning", "frowning_person"),
    ("person_gesturing_no", "no_good"),
    ("person_gesturing_ok", "ok_person"),
    ("person_getting_haircut", "haircut"),
    ("person_getting_massage", "massage"),
    ("person_in_steamy_room", "sauna_person"),
    ("person_pouting", "pouting_face"),
    ("person_raising_hand", "raising_hand"),
    ("person_running", "runner"),
    ("person_shrugging", "shrug"),
    ("person_tipping_hand", "tipping_hand_person"),
    ("person_walking", "walking"),
    ("person_wearing_turban", "person_with_turban"),
    ("right_facing_fist", "fist_right"),
    ("rolling_eyes", "roll_eyes"),
    ("satellite_orbital", "artificial_satellite"),
    ("second_place", "2nd_place_medal"),
    ("skull_crossbones", "skull_and_crossbones"),
    ("slight_frown", "slightly_frowning_face"),
    ("slight_smile", "slightly_smiling_face"),
    (
        "smiling_face_with_3_hearts",
        "smiling_face_with_three_hearts",
    ),
    ("snowman2", "snowman_with_snow"),
    ("speech_left", "left_speech_bubble"),
    ("thermometer_face", "face_with_thermometer"),
    ("third_place", "3rd_place_medal"),
    ("thunder_cloud_rain", "cloud_with_lightning_and_rain"),
    ("tools", "hammer_and_wrench"),
    ("umbrella2", "open_umbrella"),
    ("upside_down", "upside_down_face"),
    ("urn", "funeral_urn"),
    ("vulcan", "vulcan_salute"),
    ("white_sun_cloud", "sun_behind_large_cloud"),
    ("white_sun_rain_cloud", "sun_behind_rain_cloud"),
    ("white_sun_small_cloud", "sun_behind_small_cloud"),
    ("wilted_rose", "wilted_flower"),
    ("wind_blowing_face", "wind_face"),
    ("woman_bald", "bald_woman"),
    ("woman_bowing", "bowing_woman"),
    ("woman_construction_worker", "construction_worker_woman"),
    ("woman_curly_haired", "curly_haired_woman"),
    ("woman_detective", "female_detective"),
    ("woman_elf", "elf_woman"),
    ("woman_fairy", "fairy_woman"),
    ("woman_frowning", "frowning_woman"),
    ("woman_genie", "genie_woman"),
    ("woman_gesturing_no", "no_good_woman"),
    ("woman_gesturing_ok", "ok_woman"),
    ("woman_getting_face_massage", "massage_woman"),
    ("woman_getting_haircut", "haircut_woman"),
    ("woman_guard", "guardswoman"),
    ("woman_in_steamy_room", "sauna_woman"),
    ("woman_mage", "mage_woman"),
    ("woman_police_officer", "policewoman"),
    ("woman_pouting", "pouting_woman"),
    ("woman_raising_hand", "raising_hand_woman"),
    ("woman_red_haired", "red_haired_woman"),
    ("woman_running", "running_woman"),
    ("woman_superhero", "superhero_woman"),
    ("woman_supervillain", "supervillain_woman"),
    ("woman_tipping_hand", "tipping_hand_woman"),
    ("woman_vampire", "vampire_woman"),
    ("woman_walking", "walking_woman"),
    ("woman_wearing_turban", "woman_with_turban"),
    ("woman_white_haired", "white_haired_woman"),
    ("woman_zombie", "zombie_woman"),
    ("women_with_bunny_ears_partying", "dancing_women"),
    ("zipper_mouth", "zipper_mouth_face"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_rocketchat_markup_for_messenger() {
        let cases: &[(&str, &str)] = &[
            // Emoji, Rocket.Chat (JoyPixels) names as its picker inserts them.
            (":thumbsup: thanks", "👍 thanks"),
            (":slight_smile:", "🙂"),
            (":hugging: see you", "🤗 see you"),
            (":fingers_crossed::rolling_eyes:", "🤞🙄"),
            (":person_shrugging:", "🤷"),
            (":beach_umbrella: vs :beach:", "⛱\u{fe0f} vs 🏖\u{fe0f}"),
            (":flag_br: :flag_us:", "🇧🇷 🇺🇸"),
            (":flag_white:", "🏳\u{fe0f}"),
            // Skin tones, Rocket.Chat's suffix (also through an alias) and Slack's.
            (":thumbsup_tone1:", "👍🏻"),
            (":wave_tone5:", "👋🏿"),
            (":fingers_crossed_tone3:", "🤞🏽"),
            (":thumbsup::skin-tone-2:", "👍🏻"),
            (":wave::skin-tone-6:", "👋🏿"),
            (":smile::skin-tone-3:", "😄:skin-tone-3:"),
            (":smile_tone2:", ":smile_tone2:"),
            // Emoji, GitHub/Slack (gemoji) names.
            (":+1: :-1:", "👍 👎"),
            (":slightly_smiling_face: :white_check_mark:", "🙂 ✅"),
            (":tada::heart:", "🎉❤\u{fe0f}"),
            (":100:", "💯"),
            // Not shortcodes.
            (":notanemoji: stays", ":notanemoji: stays"),
            ("meet at 10:30:45 today", "meet at 10:30:45 today"),
            ("ratio 1:100:5", "ratio 1:100:5"),
            (":Smile:", ":Smile:"),
            ("a :: b", "a :: b"),
            // Links.
            (
                "see [our site](https://example.com/a?b=1)",
                "see our site (https://example.com/a?b=1)",
            ),
            ("[](https://example.com)", "https://example.com"),
            (
                "[https://example.com](https://example.com)",
                "https://example.com",
            ),
            (
                "<https://example.com|Example> :smile:",
                "Example (https://example.com) 😄",
            ),
            (
                "![logo](https://example.com/l.png)",
                "logo (https://example.com/l.png)",
            ),
            (
                "[order :package:](https://shop.example/o/1)",
                "order 📦 (https://shop.example/o/1)",
            ),
            (
                "https://medium.com/@writer/post:smile:x",
                "https://medium.com/@writer/post:smile:x",
            ),
            // Quotes: the web client prepends `[ ](<permalink>) ` per quoted message.
            (
                "[ ](https://chat.example/live/R1?msg=M1) sure, done :+1:",
                "sure, done 👍",
            ),
            (
                "[ ](https://chat.example/live/R1?msg=M1) [ ](https://chat.example/live/R1?msg=M2) both",
                "both",
            ),
            ("[ ](https://chat.example/live/R1?msg=M1)\nok", "ok"),
            // Mentions.
            ("@here the customer is back", "the customer is back"),
            ("please help @all", "please help"),
            ("@all, meeting now", "meeting now"),
            ("ask @john.doe about it", "ask john.doe about it"),
            ("thanks @bob.", "thanks bob."),
            ("write to help@example.com", "write to help@example.com"),
            ("@here\nsecond line", "second line"),
            // Code keeps its content exactly.
            ("run `ls :smile: @bob`", "run ls :smile: @bob"),
            (
                "```\nuser@host:~$ exit :wave:\n```",
                "user@host:~$ exit :wave:",
            ),
            ("```sh\necho 1\n```\ndone :wave:", "echo 1\ndone 👋"),
            // Emphasis and plain text pass through.
            ("*bold* _italic_ ~strike~", "*bold* _italic_ ~strike~"),
            ("", ""),
            ("Olá, tudo bem? 😀", "Olá, tudo bem? 😀"),
        ];
        for (input, expected) in cases {
            assert_eq!(&to_messenger(input), expected, "input {input:?}");
        }
    }

    #[test]
    fn messenger_reactions_get_the_picker_names() {
        let cases = [
            ("❤️", Some("heart")),
            ("\u{2764}", Some("heart")),
            ("😆", Some("laughing")),
            ("😮", Some("open_mouth")),
            ("😢", Some("cry")),
            ("😠", Some("angry")),
            ("👍", Some("thumbsup")),
            ("👍🏽", Some("thumbsup_tone3")),
            ("👎", Some("thumbsdown")),
            ("💩", Some("poop")),
            ("🏖️", Some("beach")),
            ("not an emoji", None),
        ];
        for (emoji, expected) in cases {
            assert_eq!(to_rocketchat_name(emoji).as_deref(), expected, "{emoji}");
        }
        // Every name given reads back as the same emoji.
        for emoji in emojis::iter() {
            if let Some(name) = to_rocketchat_name(emoji.as_str()) {
                assert_eq!(to_messenger(&format!(":{name}:")), emoji.as_str(), "{name}");
            }
        }
    }

    #[test]
    fn reaction_names_are_emoji_or_nothing() {
        let cases = [
            (":thumbsup:", Some("👍")),
            (":heart:", Some("❤️")),
            (":thumbsup_tone2:", Some("👍🏼")),
            (":party_parrot:", None),
            (":thumbsup: ", None),
            ("thumbsup", None),
        ];
        for (name, expected) in cases {
            assert_eq!(reaction_emoji(name), expected, "{name}");
        }
    }

    #[test]
    fn rocketchat_names_are_sorted_and_resolve() {
        assert!(
            ROCKETCHAT_NAMES.windows(2).all(|w| w[0].0 < w[1].0),
            "the table must stay sorted for the binary search"
        );
        for (rocketchat, gemoji) in ROCKETCHAT_NAMES {
            let target = emojis::get_by_shortcode(gemoji);
            assert!(target.is_some(), "{rocketchat} maps to unknown {gemoji}");
            // An entry gemoji already resolves to the same emoji is dead weight.
            assert_ne!(
                emojis::get_by_shortcode(rocketchat).map(Emoji::as_str),
                target.map(Emoji::as_str),
                "{rocketchat} needs no entry"
            );
        }
    }
}
