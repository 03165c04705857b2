//! Window assignment: which windows a timestamp belongs to. Windows are aligned to the epoch
//! and cover `[start, end)`; a window fires when the watermark reaches `end - 1`, as in Flink.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    Tumbling { size: i64 },
    Sliding { size: i64, slide: i64 },
    Session { gap: i64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    pub kind: WindowKind,
    /// How long after `end - 1` a window still accepts (and re-emits for) late records.
    pub lateness: i64,
    /// Assign by the wall clock at arrival instead of event time.
    pub processing_time: bool,
}

impl WindowSpec {
    /// Calls `f(start, end)` for each aligned window holding `ts` (not for sessions).
    #[inline]
    pub fn assign(&self, ts: i64, mut f: impl FnMut(i64, i64)) {
        match self.kind {
            WindowKind::Tumbling { size } => {
                let start = ts - ts.rem_euclid(size);
                f(start, start.saturating_add(size));
            }
            WindowKind::Sliding { size, slide } => {
                let last = ts - ts.rem_euclid(slide);
                let mut start = last;
                while start > ts - size {
                    f(start, start.saturating_add(size));
                    start -= slide;
                }
            }
            WindowKind::Session { gap } => f(ts, ts.saturating_add(gap)),
        }
    }

    /// A window is late once the watermark has passed its end plus the allowed lateness.
    #[inline]
    pub fn is_late(&self, end: i64, watermark: i64) -> bool {
        end.saturating_sub(1).saturating_add(self.lateness) <= watermark
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn windows(spec: WindowSpec, ts: i64) -> Vec<(i64, i64)> {
        let mut v = Vec::new();
        spec.assign(ts, |s, e| v.push((s, e)));
        v
    }

    #[test]
    fn tumbling_aligns_negative_times_too() {
        let s = WindowSpec {
            kind: WindowKind::Tumbling { size: 10 },
            lateness: 0,
            processing_time: false,
        };
        assert_eq!(windows(s, 25), vec![(20, 30)]);
        assert_eq!(windows(s, -1), vec![(-10, 0)]);
    }

    #[test]
    fn sliding_gives_size_over_slide_windows() {
        let s = WindowSpec {
            kind: WindowKind::Sliding { size: 10, slide: 2 },
            lateness: 0,
            processing_time: false,
        };
        assert_eq!(
            windows(s, 13),
            vec![(12, 22), (10, 20), (8, 18), (6, 16), (4, 14)]
        );
    }
}
