package eddy.bench;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.CompletableFuture;

import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.connector.source.Boundedness;
import org.apache.flink.api.connector.source.ReaderOutput;
import org.apache.flink.api.connector.source.Source;
import org.apache.flink.api.connector.source.SourceReader;
import org.apache.flink.api.connector.source.SourceReaderContext;
import org.apache.flink.api.connector.source.SourceSplit;
import org.apache.flink.api.connector.source.SplitEnumerator;
import org.apache.flink.api.connector.source.SplitEnumeratorContext;
import org.apache.flink.api.java.typeutils.ResultTypeQueryable;
import org.apache.flink.core.io.InputStatus;
import org.apache.flink.core.io.SimpleVersionedSerializer;

/**
 * A bounded FLIP-27 source with exactly one split per reader: split s of S goes to subtask s.
 * One split per reader matters: with monotonous watermarks a reader that read two splits one
 * after the other would go back in time and drop records as late. Subclasses say what a split
 * reads (generator indices i ≡ s mod S, or a byte range of a file). No checkpoints are taken in
 * the benchmark, so split progress is not tracked.
 */
public abstract class SplitSource<T> implements Source<T, SplitSource.Split, Integer>, ResultTypeQueryable<T> {

    /** What one split reads: a cursor over its records. */
    public interface Cursor<T> {
        /** The next record, or null at the end of the split. */
        T next() throws IOException;

        default void close() throws IOException {}
    }

    private final TypeInformation<T> type;

    protected SplitSource(TypeInformation<T> type) {
        this.type = type;
    }

    protected abstract Cursor<T> open(int split, int numSplits) throws IOException;

    @Override
    public TypeInformation<T> getProducedType() {
        return type;
    }

    @Override
    public Boundedness getBoundedness() {
        return Boundedness.BOUNDED;
    }

    @Override
    public SourceReader<T, Split> createReader(SourceReaderContext ctx) {
        return new Reader<>(this, ctx);
    }

    @Override
    public SplitEnumerator<Split, Integer> createEnumerator(SplitEnumeratorContext<Split> ctx) {
        return new Enumerator(ctx);
    }

    @Override
    public SplitEnumerator<Split, Integer> restoreEnumerator(SplitEnumeratorContext<Split> ctx, Integer state) {
        return new Enumerator(ctx);
    }

    @Override
    public SimpleVersionedSerializer<Split> getSplitSerializer() {
        return new SplitSerializer();
    }

    @Override
    public SimpleVersionedSerializer<Integer> getEnumeratorCheckpointSerializer() {
        return new IntSerializer();
    }

    /** Split s of S. */
    public static final class Split implements SourceSplit {
        final int index, count;

        Split(int index, int count) {
            this.index = index;
            this.count = count;
        }

        @Override
        public String splitId() {
            return index + "/" + count;
        }
    }

    /** Hands split s to subtask s on its first request; its second request ends its input. */
    static final class Enumerator implements SplitEnumerator<Split, Integer> {
        private final SplitEnumeratorContext<Split> ctx;
        private final boolean[] assigned;

        Enumerator(SplitEnumeratorContext<Split> ctx) {
            this.ctx = ctx;
            this.assigned = new boolean[ctx.currentParallelism()];
        }

        @Override public void start() {}

        @Override
        public void handleSplitRequest(int subtask, String host) {
            if (!assigned[subtask]) {
                assigned[subtask] = true;
                ctx.assignSplit(new Split(subtask, assigned.length), subtask);
            } else {
                ctx.signalNoMoreSplits(subtask);
            }
        }

        @Override public void addSplitsBack(List<Split> splits, int subtask) {
            for (Split s : splits) assigned[s.index] = false;
        }

        @Override public void addReader(int subtask) {}

        @Override public Integer snapshotState(long checkpointId) { return 0; }

        @Override public void close() {}
    }

    /** Reads its one split, one record per pollNext as Flink's own sources do. */
    static final class Reader<T> implements SourceReader<T, Split> {
        private final SplitSource<T> source;
        private final SourceReaderContext ctx;
        private CompletableFuture<Void> available = new CompletableFuture<>();
        private Cursor<T> cursor;
        private boolean noMoreSplits;
        private boolean started;
        private long emitted;

        Reader(SplitSource<T> source, SourceReaderContext ctx) {
            this.source = source;
            this.ctx = ctx;
        }

        @Override
        public void start() {
            ctx.sendSplitRequest();
        }

        @Override
        public InputStatus pollNext(ReaderOutput<T> output) throws Exception {
            if (cursor == null) {
                if (noMoreSplits) return InputStatus.END_OF_INPUT;
                if (available.isDone()) available = new CompletableFuture<>();
                return InputStatus.NOTHING_AVAILABLE;
            }
            T record = cursor.next();
            if (record == null) {
                finishSplit();
                return noMoreSplits ? InputStatus.END_OF_INPUT : InputStatus.NOTHING_AVAILABLE;
            }
            if (!started) {
                started = true;
                Meter.firstRecord();
            }
            emitted++;
            output.collect(record);
            return InputStatus.MORE_AVAILABLE;
        }

        private void finishSplit() throws IOException {
            cursor.close();
            cursor = null;
            Meter.addRecords(emitted);
            emitted = 0;
            ctx.sendSplitRequest();
        }

        @Override
        public void addSplits(List<Split> splits) {
            if (splits.size() != 1 || cursor != null) throw new IllegalStateException("one split per reader");
            Split s = splits.get(0);
            try {
                cursor = source.open(s.index, s.count);
            } catch (IOException e) {
                throw new RuntimeException(e);
            }
            available.complete(null);
        }

        @Override
        public void notifyNoMoreSplits() {
            noMoreSplits = true;
            available.complete(null);
        }

        @Override
        public CompletableFuture<Void> isAvailable() {
            return available;
        }

        @Override
        public List<Split> snapshotState(long checkpointId) {
            return Collections.emptyList();
        }

        @Override
        public void close() throws Exception {
            if (cursor != null) cursor.close();
        }
    }

    static final class SplitSerializer implements SimpleVersionedSerializer<Split> {
        @Override public int getVersion() { return 1; }

        @Override
        public byte[] serialize(Split s) throws IOException {
            ByteArrayOutputStream bytes = new ByteArrayOutputStream(8);
            DataOutputStream out = new DataOutputStream(bytes);
            out.writeInt(s.index);
            out.writeInt(s.count);
            out.flush();
            return bytes.toByteArray();
        }

        @Override
        public Split deserialize(int version, byte[] serialized) throws IOException {
            DataInputStream in = new DataInputStream(new ByteArrayInputStream(serialized));
            return new Split(in.readInt(), in.readInt());
        }
    }

    static final class IntSerializer implements SimpleVersionedSerializer<Integer> {
        @Override public int getVersion() { return 1; }

        @Override
        public byte[] serialize(Integer v) {
            return new byte[] {(byte) (v >>> 24), (byte) (v >>> 16), (byte) (v >>> 8), (byte) (int) v};
        }

        @Override
        public Integer deserialize(int version, byte[] b) {
            return ((b[0] & 0xff) << 24) | ((b[1] & 0xff) << 16) | ((b[2] & 0xff) << 8) | (b[3] & 0xff);
        }
    }
}
