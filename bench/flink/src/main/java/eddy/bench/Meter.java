package eddy.bench;

import java.lang.management.ManagementFactory;

/**
 * The measurement, shared by the sources, the sinks and main: the MiniCluster runs in this JVM
 * and the job's classes come from the application class path, so these statics are the same
 * everywhere. The clock runs from the first record a source produces to the last result a sink
 * writes (its close), so JVM and MiniCluster start-up and shutdown are excluded.
 */
public final class Meter {
    private static final com.sun.management.OperatingSystemMXBean OS =
            (com.sun.management.OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean();

    private static long startWall, startCpu, endWall, endCpu;
    private static long records, results;

    private Meter() {}

    /** Called by each source reader once, when it produces its first record; the first call wins. */
    static synchronized void firstRecord() {
        if (startWall == 0) {
            startWall = System.nanoTime();
            startCpu = OS.getProcessCpuTime();
        }
    }

    /** Forgets a finished (warm-up) job. */
    static synchronized void reset() {
        startWall = startCpu = endWall = endCpu = records = results = 0;
    }

    static synchronized void addRecords(long n) {
        records += n;
    }

    /** Called by each sink writer when it closes, i.e. after its last result; the last call wins. */
    static synchronized void sinkClosed(long n) {
        results += n;
        endWall = System.nanoTime();
        endCpu = OS.getProcessCpuTime();
    }

    static synchronized String report(String caseName, int parallelism, String state) {
        double cpu = (endCpu - startCpu) / 1e9;
        double wall = (endWall - startWall) / 1e9;
        return String.format(java.util.Locale.ROOT,
                "flink case=%s parallelism=%d state=%s records=%d results=%d cpu_s=%.3f wall_s=%.3f per_cpu_s=%.0f peak_rss_mb=%d",
                caseName, parallelism, state, records, results, cpu, wall, records / cpu, peakRssMb());
    }

    static long peakRssMb() {
        try {
            for (String line : java.nio.file.Files.readAllLines(java.nio.file.Path.of("/proc/self/status"))) {
                if (line.startsWith("VmHWM:")) {
                    return Long.parseLong(line.replaceAll("[^0-9]", "")) / 1024;
                }
            }
        } catch (java.io.IOException e) {
            // not Linux: no figure
        }
        return -1;
    }
}
