//! The last stretch of a call's audio, kept in a window of fixed length: the speech before the
//! VAD confirmed it (the start of an utterance) and, in realtime mode, the second before a turn
//! was noticed (the start of its kept audio). Fed every frame, so it never reallocates.

use std::collections::VecDeque;

/// The last `limit` samples (or bytes) pushed, in one allocation made on first use (so a call
/// pays for it only once audio flows, and never more than once).
#[derive(Debug)]
pub struct RecentWindow<T> {
    items: VecDeque<T>,
    limit: usize,
}

impl<T: Copy> RecentWindow<T> {
    pub fn new(limit: usize) -> Self {
        Self {
            items: VecDeque::new(),
            limit,
        }
    }

    /// Adds `audio`, forgetting what falls out of the window.
    pub fn push(&mut self, audio: &[T]) {
        let room = self.limit.saturating_sub(self.items.capacity());
        self.items.reserve_exact(room);
        let fresh = &audio[audio.len().saturating_sub(self.limit)..];
        let excess = (self.items.len() + fresh.len()).saturating_sub(self.limit);
        self.items.drain(..excess);
        self.items.extend(fresh);
    }

    /// Appends the window to `out` and empties it.
    pub fn move_into(&mut self, out: &mut Vec<T>) {
        let (head, tail) = self.items.as_slices();
        out.extend_from_slice(head);
        out.extend_from_slice(tail);
        self.items.clear();
    }

    /// Forgets the window's contents (keeping its allocation).
    pub fn clear(&mut self) {
        self.items.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_items_in_one_allocation() {
        let mut recent = RecentWindow::new(10);
        recent.push(&[1, 2, 3, 4]);
        let capacity = recent.items.capacity();
        assert!(capacity >= 10);
        for chunk in [[5u8, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16]] {
            recent.push(&chunk);
        }
        assert_eq!(recent.items.capacity(), capacity, "never reallocated");
        let mut out = vec![0];
        recent.move_into(&mut out);
        assert_eq!(out, [0, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]);
        // A piece longer than the window keeps its end.
        recent.push(&(0..25).collect::<Vec<u8>>());
        let mut out = Vec::new();
        recent.move_into(&mut out);
        assert_eq!(out, (15..25).collect::<Vec<u8>>());
        assert_eq!(recent.items.capacity(), capacity);
    }
}
