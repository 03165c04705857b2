package eddy.bench;

import java.io.BufferedOutputStream;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;

import org.apache.flink.api.connector.sink2.Sink;
import org.apache.flink.api.connector.sink2.SinkWriter;
import org.apache.flink.api.connector.sink2.WriterInitContext;

/**
 * Writes result lines (already JSON) to a file. With more than one subtask each writes its own
 * part file (PATH.part-K), which main concatenates into PATH after the measurement; sharing one
 * file would need locking that a real Flink sink would not have.
 */
public final class JsonLinesSink implements Sink<String> {
    private final String path;

    public JsonLinesSink(String path) {
        this.path = path;
    }

    static String partPath(String path, int subtask, int parallelism) {
        return parallelism == 1 || path.startsWith("/dev/") ? path : path + ".part-" + subtask;
    }

    @Override
    public SinkWriter<String> createWriter(WriterInitContext ctx) throws IOException {
        int subtask = ctx.getTaskInfo().getIndexOfThisSubtask();
        int parallelism = ctx.getTaskInfo().getNumberOfParallelSubtasks();
        return new Writer(new BufferedOutputStream(new FileOutputStream(partPath(path, subtask, parallelism)), 1 << 20));
    }

    static final class Writer implements SinkWriter<String> {
        private final OutputStream out;
        private long written;

        Writer(OutputStream out) {
            this.out = out;
        }

        @Override
        public void write(String line, Context context) throws IOException {
            // Results are ASCII JSON.
            out.write(line.getBytes(StandardCharsets.US_ASCII));
            out.write('\n');
            written++;
        }

        @Override
        public void flush(boolean endOfInput) throws IOException {
            out.flush();
        }

        @Override
        public void close() throws IOException {
            out.close();
            Meter.sinkClosed(written);
        }
    }
}
