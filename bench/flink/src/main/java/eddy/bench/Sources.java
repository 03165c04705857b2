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
     * Split s of S reads the lines that start in bytes [s*len/S, (s+1)*len/S): each split is a
     * contiguous part of the file, so its timestamps stay monotonous when the file's are.
     */
    static final class JsonLinesClickSource extends SplitSource<Click> {
        private final String path;

        JsonLinesClickSource(String path) {
            super(TypeInformation.of(Click.class));
            this.path = path;
        }

        @Override
        protected Cursor<Click> open(int split, int numSplits) throws IOException {
            RandomAccessFile file = new RandomAccessFile(path, "r");
            long len = file.length();
            long start = len * split / numSplits;
            long end = len * (split + 1) / numSplits;
            ObjectReader reader = new ObjectMapper()
                    .disable(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES)
                    .readerFor(Click.class);
            return new Cursor<>() {
                final byte[] buf = new byte[1 << 20];
                int pos, lim;
                long bufOffset = start; // file offset of buf[0]
                boolean eof;

                {
                    // A line belongs to the split holding its first byte: unless at the file's
                    // start, skip the line in progress at `start` (it began at or before start-1).
                    if (start > 0) {
                        bufOffset = start - 1;
                        file.seek(start - 1);
                        if (skipLine() < 0) eof = true;
                    } else {
                        file.seek(0);
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
                    if (n <= 0) return false;
                    lim += n;
                    return true;
                }

                private int skipLine() throws IOException {
                    while (true) {
                        for (; pos < lim; pos++) {
                            if (buf[pos] == '\n') {
                                pos++;
                                return 0;
                            }
                        }
                        if (!fill()) return -1;
                    }
                }

                @Override
                public Click next() throws IOException {
                    while (!eof) {
                        if (bufOffset + pos >= end) return null;
                        int scan = pos;
                        while (true) {
                            while (scan < lim && buf[scan] != '\n') scan++;
                            if (scan < lim) break;
                            int consumed = pos;
                            if (!fill()) {
                                eof = true;
                                break;
                            }
                            scan -= consumed;
                        }
                        int lineStart = pos;
                        int lineEnd = eof ? lim : scan;
                        pos = eof ? lim : scan + 1;
                        if (lineEnd > lineStart && !isBlank(buf, lineStart, lineEnd)) {
                            return reader.readValue(buf, lineStart, lineEnd - lineStart);
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
