//! Text helpers every layer uses: cutting what a run, a log line or an error message
//! carries to a size its record can hold. A leaf: it imports nothing of runbookd's.

/// `text` cut to at most `max` bytes (on a character boundary), with a marker saying how
/// much was cut.
pub fn truncate(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}… [truncated: {} more bytes]",
        &text[..end],
        text.len() - end
    )
    .into()
}
