//! A cursor over tokens, for the small parsers of filter patterns and Insights queries.

pub(crate) struct Cursor<T> {
    pub(crate) items: Vec<T>,
    pub(crate) at: usize,
}

impl<T: Clone> Cursor<T> {
    pub(crate) fn new(items: Vec<T>) -> Self {
        Self { items, at: 0 }
    }

    pub(crate) fn peek(&self) -> Option<&T> {
        self.items.get(self.at)
    }

    pub(crate) fn next(&mut self) -> Option<T> {
        let t = self.items.get(self.at).cloned();
        self.at += 1;
        t
    }
}
