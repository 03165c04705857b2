package eddy.bench;

import java.io.IOException;
import java.io.RandomAccessFile;

import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.DeserializationFeature;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectReader;

import eddy.gen.Generators.Auction;
import eddy.gen.Generators.Bid;
import eddy.gen.Generators.Click;
import eddy.gen.Generators.ClickGen;
import eddy.gen.Generators.Kind;
import eddy.gen.Generators.NexmarkGen;
import eddy.gen.Generators.Person;

/** The benchmark's sources: the generators of docs/generators.md and a JSON-lines file. */
final class Sources {
    private Sources() {}

    /** `generator`: split s of S emits records i ≡ s (mod S), i < count. */
    static final class ClickSource extends SplitSource<Click> {
        private final ClickGen gen;
        private final long count;

        ClickSource(ClickGen gen, long count) {
            super(TypeInformation.of(Click.class));
            this.gen = gen;
            this.count = count;
        }

        @Override
        protected Cursor<Click> open(int split, int numSplits) {
            return new Cursor<>() {
                long i = split;

                @Override
                public Click next() {
                    if (i >= count) return null;
                    Click c = gen.record(i);
                    i += numSplits;
                    return c;
                }
            };
        }
    }

    /**
     * `nexmark` of one kind: split s of S walks the indices i ≡ s (mod S), i < count, and emits
     * the events of its kind among them.
     */
    static final class NexmarkSource<T> extends SplitSource<T> {
        private final NexmarkGen gen;
        private final long count;
        private final Kind kind;

        @SuppressWarnings("unchecked")
        NexmarkSource(NexmarkGen gen, long count, Kind kind) {
            super((TypeInformation<T>) TypeInformation.of((Class<Object>) (Class<?>)
                    (kind == Kind.BID ? Bid.class : kind == Kind.PERSON ? Person.class : Auction.class)));
            this.gen = gen;
            this.count = count;
            this.kind = kind;
        }

        @Override
        @SuppressWarnings("unchecked")
        protected Cursor<T> open(int split, int numSplits) {
            return new Cursor<>() {
                long i = split;

                @Override
                public T next() {
                    while (i < count && Kind.of(i) != kind) i += numSplits;
                    if (i >= count) return null;
                    long at = i;
                    i += numSplits;
                    switch (kind) {
                        case PERSON: return (T) gen.person(at);
                        case AUCTION: return (T) gen.auction(at);
                        default: return (T) gen.bid(at);
                    }
                }
            };
        }
    }

    /**
     * A JSON-lines file of `generator` records, parsed with the Jackson that Flink ships (shaded).
     * The file is cut into 4 MiB chunks dealt round-robin: split s of S reads the lines that start
     * in chunks s, s+S, s+2S, ... Contiguous halves would be simpler, but the second half's
     * windows could then not fire until the first half was read (the watermark is the minimum
     * over splits), holding half the file's windows in state; dealt chunks keep the splits
     * within a few chunks of event time of each other, like the generators' i mod S splits.
     */
    static final class JsonLinesClickSource extends SplitSource<Click> {
        // A system property so that tests can use tiny chunks and hit the edge cases.
        static final long CHUNK = Long.getLong("eddy.bench.chunk", 4 << 20);
        private final String path;
        private final long limit;

        /** Reads the file's lines, at most `limit` of them (for the warm-up). */
        JsonLinesClickSource(String path, long limit) {
            super(TypeInformation.of(Click.class));
            this.path = path;
            this.limit = limit;
        }

        @Override
        protected Cursor<Click> open(int split, int numSplits) throws IOException {
            RandomAccessFile file = new RandomAccessFile(path, "r");
            long len = file.length();
            ObjectReader reader = new ObjectMapper()
                    .disable(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES)
                    .readerFor(Click.class);
            return new Cursor<>() {
                final byte[] buf = new byte[1 << 20];
                int pos, lim;
                long bufOffset; // file offset of buf[0]
                boolean eof; // buf holds the file's last bytes
                long chunk = split - numSplits; // the chunk being read
                long chunkEnd = -1; // lines starting before this offset are this chunk's

                /** Moves to this split's next chunk; false when there is none. */
                private boolean nextChunk() throws IOException {
                    while (true) {
                        chunk += numSplits;
                        long start = chunk * CHUNK;
                        if (start >= len) return false;
                        chunkEnd = Math.min(start + CHUNK, len);
                        // A line belongs to the chunk holding its first byte: unless at the
                        // file's start, skip the line in progress at `start` (read from start-1).
                        bufOffset = start == 0 ? 0 : start - 1;
                        file.seek(bufOffset);
                        pos = lim = 0;
                        eof = false;
                        if (start == 0 || skipLine()) return true;
                    }
                }

                /** Fills buf after compacting away the consumed bytes; false at end of file. */
                private boolean fill() throws IOException {
                    if (pos > 0) {
                        System.arraycopy(buf, pos, buf, 0, lim - pos);
                        bufOffset += pos;
                        lim -= pos;
                        pos = 0;
                    }
                    if (lim == buf.length) throw new IOException("line longer than " + buf.length + " bytes");
                    int n = file.read(buf, lim, buf.length - lim);
                    if (n <= 0) {
                        eof = true;
                        return false;
                    }
                    lim += n;
                    return true;
                }

                /** Skips past the next newline; false if the file ends first. */
                private boolean skipLine() throws IOException {
                    while (true) {
                        for (; pos < lim; pos++) {
                            if (buf[pos] == '\n') {
                                pos++;
                                return true;
                            }
                        }
                        if (!fill()) return false;
                    }
                }

                // The warm-up's limit, dealt like the generators' indices.
                final long perSplit = limit / numSplits + (split < limit % numSplits ? 1 : 0);
                long emitted;

                @Override
                public Click next() throws IOException {
                    while (emitted < perSplit) {
                        if (bufOffset + pos >= chunkEnd) {
                            if (!nextChunk()) return null;
                            continue;
                        }
                        int scan = pos;
                        while (scan < lim && buf[scan] != '\n') scan++;
                        if (scan == lim && !eof) {
                            fill(); // no whole line in buf yet: read more (compacts to pos 0)
                            continue;
                        }
                        int lineStart = pos;
                        pos = scan < lim ? scan + 1 : lim;
                        if (scan > lineStart && !isBlank(buf, lineStart, scan)) {
                            emitted++;
                            return reader.readValue(buf, lineStart, scan - lineStart);
                        }
                    }
                    return null;
                }

                @Override
                public void close() throws IOException {
                    file.close();
                }
            };
        }

        private static boolean isBlank(byte[] b, int from, int to) {
            for (int k = from; k < to; k++) {
                if (b[k] != ' ' && b[k] != '\r' && b[k] != '\t') return false;
            }
            return true;
        }
    }
}
