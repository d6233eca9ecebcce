//! Watch framing: the server writes one JSON event per line
//! (apimachinery pkg/util/framer's JSON framer reads the same stream), and a chunk of
//! the body may end anywhere, inside an event or between two.

use serde_json::Value;

/// Collects body chunks and yields each complete event line.
#[derive(Debug, Default)]
pub struct LineFramer {
    pending: Vec<u8>,
}

/// A line that does not parse as a JSON event.
#[derive(Debug, thiserror::Error)]
#[error("a watch event that is not JSON: {0}")]
pub struct BadEvent(#[from] serde_json::Error);

impl LineFramer {
    /// Adds a chunk; returns the events it completes, in order. Blank lines (keep-alives)
    /// are skipped.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Result<Value, BadEvent>> {
        let mut events = Vec::new();
        // Only the new bytes can hold the next newline: scanning from where the old ones
        // end keeps a long event delivered in many chunks linear.
        let mut scanned = self.pending.len();
        self.pending.extend_from_slice(chunk);
        while let Some(offset) = self.pending[scanned..].iter().position(|b| *b == b'\n') {
            let end = scanned + offset;
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            scanned = 0;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            events.push(serde_json::from_slice(&line).map_err(BadEvent));
        }
        events
    }

    /// Whether bytes of an unfinished event are held.
    pub fn has_partial(&self) -> bool {
        !self.pending.iter().all(u8::is_ascii_whitespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stream() -> Vec<u8> {
        let events = [
            json!({"type": "ADDED", "object": {"metadata": {"name": "a", "resourceVersion": "1"}}}),
            json!({"type": "MODIFIED", "object": {"metadata": {"name": "b\nc"}}}),
            json!({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}}),
        ];
        let mut bytes = Vec::new();
        for event in events {
            bytes.extend(serde_json::to_vec(&event).unwrap());
            bytes.extend(b"\n\n");
        }
        bytes
    }

    #[test]
    fn events_split_at_every_byte_boundary_come_out_whole_and_in_order() {
        let bytes = stream();
        let whole: Vec<Value> = LineFramer::default()
            .push(&bytes)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[1]["object"]["metadata"]["name"], "b\nc");
        for cut in 1..bytes.len() {
            let mut framer = LineFramer::default();
            let mut events = framer.push(&bytes[..cut]);
            events.extend(framer.push(&bytes[cut..]));
            let events: Vec<Value> = events.into_iter().map(Result::unwrap).collect();
            assert_eq!(events, whole, "cut at {cut}");
            assert!(!framer.has_partial());
        }
    }

    #[test]
    fn one_byte_chunks_yield_each_event_when_its_newline_arrives() {
        let mut framer = LineFramer::default();
        let mut seen = 0;
        for byte in stream() {
            let events = framer.push(&[byte]);
            if byte == b'\n' {
                assert!(events.len() <= 1);
            } else {
                assert!(events.is_empty());
            }
            seen += events.len();
        }
        assert_eq!(seen, 3);
    }

    #[test]
    fn an_unfinished_event_is_held_and_a_bad_line_is_reported() {
        let mut framer = LineFramer::default();
        assert!(framer.push(br#"{"type":"ADD"#).is_empty());
        assert!(framer.has_partial());
        let events = framer.push(b"ED\"}\nnot json\n");
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].as_ref().unwrap()["type"], "ADDED");
        assert!(events[1].is_err());
    }
}
