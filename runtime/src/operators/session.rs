//! Session windows: each key's sessions, merged as records arrive (Flink merges sessions that
//! overlap or touch), fired by timers ordered by session end, and spilled to the store past the
//! cache (`window_store`), their timers staying in memory.

use super::Emit;
use super::aggregate::{apply, new_accs};
use super::window::WindowKind;
use super::window_agg::{Key, Sess, WindowAgg};
use crate::expr::V;

impl WindowAgg {
    /// Fires the sessions whose end the watermark `w` passed, and drops the late ones.
    pub(super) fn fire_sessions(&mut self, w: i64, out: &mut Emit) {
        let window = self.spec.window;
        // Sessions fired but not yet late wait for a second timer, when they become late
        // (`end - 1 + lateness`), rather than being looked at on every watermark.
        let mut later: Vec<(i64, Key)> = Vec::new();
        while let Some(entry) = self.timers.first_entry() {
            if *entry.key() - 1 > w {
                break;
            }
            let keys = entry.remove();
            for key in keys {
                if let Err(e) = self.load_sessions(&key) {
                    self.failure.get_or_insert(e);
                    return;
                }
                let Some(list) = self.sessions.get_mut(&key) else {
                    continue;
                };
                let mut changed = false;
                let mut i = 0;
                while i < list.len() {
                    let s = &mut list[i];
                    if s.end - 1 > w {
                        i += 1;
                        continue;
                    }
                    if !s.fired {
                        Self::emit_row(out, &key, s.start, s.end, &s.accs);
                        s.fired = true;
                        changed = true;
                    }
                    if window.is_late(s.end, w) {
                        list.swap_remove(i);
                        changed = true;
                    } else {
                        later.push((s.end.saturating_add(window.lateness), key.clone()));
                        i += 1;
                    }
                }
                if list.is_empty() {
                    self.sessions.remove(&key);
                }
                if changed {
                    self.dirty_sessions.insert(key);
                }
            }
        }
        for (t, key) in later {
            self.timers.entry(t).or_default().push(key);
        }
    }

    pub(super) fn add_session(
        &mut self,
        ts: i64,
        args: &[V<'_>],
        out: &mut Emit,
    ) -> Result<bool, String> {
        let window = self.spec.window;
        let WindowKind::Session { gap } = window.kind else {
            return Ok(true);
        };
        let (mut start, mut end) = (ts, ts.saturating_add(gap));
        if self.sessions_spilled {
            let key = std::mem::take(&mut self.key_buf);
            let loaded = self.load_sessions(&key);
            self.key_buf = key;
            loaded.map_err(|e| format!("state store: {e}"))?;
        }
        let list = self.sessions.get(&self.key_buf[..]);
        // Flink merges sessions that overlap or touch.
        if let Some(list) = list {
            for s in list {
                if s.start <= end && s.end >= start {
                    start = start.min(s.start);
                    end = end.max(s.end);
                }
            }
        }
        if window.is_late(end, self.wm) {
            return Ok(false);
        }
        let key: Key = self.key_buf.iter().cloned().collect::<Key>();
        let list = self.sessions.entry(key.clone()).or_default();
        let mut accs = new_accs(&self.spec.aggs);
        let mut i = 0;
        while i < list.len() {
            if list[i].start <= end && list[i].end >= start {
                let old = list.swap_remove(i);
                for (a, b) in accs.iter_mut().zip(old.accs.iter()) {
                    a.merge(b).map_err(|e| e.to_string())?;
                }
            } else {
                i += 1;
            }
        }
        apply(&self.spec.aggs, &mut accs, args, ts).map_err(|e| e.to_string())?;
        let mut s = Sess {
            start,
            end,
            accs,
            fired: false,
        };
        if end - 1 <= self.wm {
            Self::emit_row(out, &key, start, end, &s.accs);
            s.fired = true;
        }
        list.push(s);
        self.dirty_sessions.insert(key.clone());
        self.timers.entry(end).or_default().push(key);
        Ok(true)
    }
}
