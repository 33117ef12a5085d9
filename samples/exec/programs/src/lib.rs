//! The logic of `textstat`, the WASI command the exec sample ships in its
//! application image; a library too, so that `tessera bench compute` can run
//! the same computation natively.

/// What `textstat` prints for `text` read from `input`:
/// `<lines> <words> <bytes> <input>`, like `wc`, with a newline.
pub fn stat_line(text: &str, input: &str) -> String {
    format!(
        "{} {} {} {input}\n",
        text.lines().count(),
        text.split_whitespace().count(),
        text.len()
    )
}

/// What `textstat` writes to its OUTPUT: `text`, upper-cased when `upper`.
pub fn transform(text: String, upper: bool) -> String {
    if upper { text.to_uppercase() } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_like_wc_and_upper_cases_on_request() {
        let text = "one two\n  three\n\nfour";
        assert_eq!(stat_line(text, "/inputs/a.txt"), "4 4 21 /inputs/a.txt\n");
        assert_eq!(stat_line("", "e"), "0 0 0 e\n");
        assert_eq!(transform("Straße ok".into(), true), "STRASSE OK");
        assert_eq!(transform("Straße".into(), false), "Straße");
    }
}
