// runbox compiles Main.java and runs the class Main: name your class Main.
public class Main {
    public static void main(String[] args) {
        System.out.println("Hello from runbox, in Java " + System.getProperty("java.version"));
    }
}
