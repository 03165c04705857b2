package eddy.gen;

import java.io.BufferedWriter;
import java.io.OutputStreamWriter;
import java.io.Writer;
import java.nio.charset.StandardCharsets;

/**
 * Prints generator records as JSON lines, for comparing with the Rust generator:
 * <pre>
 *   javac -d OUT bench/flink/gen/eddy/gen/*.java
 *   java -cp OUT eddy.gen.Dump generator|nexmark-bid|nexmark-person|nexmark-auction SEED COUNT [KEYS] [EVENTS_PER_SECOND] [MAX_DISORDER_MS]
 * </pre>
 * Arguments are positional; KEYS and MAX_DISORDER_MS only apply to `generator` (nexmark ignores
 * them). EVENTS_PER_SECOND defaults to 1000 for `generator` and 10000 for nexmark. For the nexmark
 * kinds COUNT counts events of all kinds: only the events of the given kind among 0..COUNT-1 print.
 * startTime is always the default, 1700000000000.
 */
public final class Dump {
    public static void main(String[] args) throws Exception {
        if (args.length < 3) {
            System.err.println("usage: Dump generator|nexmark-bid|nexmark-person|nexmark-auction SEED COUNT [KEYS] [EVENTS_PER_SECOND] [MAX_DISORDER_MS]");
            System.exit(2);
        }
        String what = args[0];
        long seed = Long.parseUnsignedLong(args[1]);
        long count = Long.parseLong(args[2]);
        long keys = args.length > 3 ? Long.parseLong(args[3]) : 1000;
        boolean nexmark = what.startsWith("nexmark-");
        long eps = args.length > 4 ? Long.parseLong(args[4]) : nexmark ? 10000 : 1000;
        long disorder = args.length > 5 ? Long.parseLong(args[5]) : 0;
        long start = Generators.DEFAULT_START_TIME;

        Writer out = new BufferedWriter(new OutputStreamWriter(System.out, StandardCharsets.UTF_8), 1 << 16);
        if (!nexmark) {
            if (!what.equals("generator")) throw new IllegalArgumentException("unknown generator " + what);
            Generators.ClickGen g = new Generators.ClickGen(seed, keys, eps, start, disorder);
            for (long i = 0; i < count; i++) {
                out.write(g.record(i).toJson());
                out.write('\n');
            }
        } else {
            Generators.Kind kind = Generators.Kind.parse(what.substring("nexmark-".length()));
            Generators.NexmarkGen g = new Generators.NexmarkGen(seed, eps, start);
            for (long i = 0; i < count; i++) {
                if (Generators.Kind.of(i) != kind) continue;
                String line;
                switch (kind) {
                    case PERSON: line = g.person(i).toJson(); break;
                    case AUCTION: line = g.auction(i).toJson(); break;
                    default: line = g.bid(i).toJson();
                }
                out.write(line);
                out.write('\n');
            }
        }
        out.flush();
    }
}
