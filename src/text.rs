//! Text helpers every layer uses: cutting what a run, a log line or an error message
//! carries to a size its record can hold. A leaf: it imports nothing of runbookd's.

/// `text` cut to at most `max` bytes (on a character boundary), with a marker saying how
/// much was cut.
pub fn truncate(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    truncate_from(text, text.len(), max)
}

/// The first `max` bytes of `text` at most, cut on a character boundary, without a marker.
pub fn prefix(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// [`truncate`] for `text`, a prefix of a text `whole_len` bytes long (already cut there for
/// a cheaper look at it): the marker counts what was cut from the whole.
pub fn truncate_from(text: &str, whole_len: usize, max: usize) -> std::borrow::Cow<'_, str> {
    if whole_len <= max {
        return text.into();
    }
    let head = prefix(text, max);
    format!("{head}… [truncated: {} more bytes]", whole_len - head.len()).into()
}
